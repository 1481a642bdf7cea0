"""`python -m vodpoller` is the same as the `vodpoller` command."""

from vodpoller.entry import main

raise SystemExit(main())
