"""`python -m vodpoller` is the same as the `vodpoller` command."""

from vodpoller.cli import main

raise SystemExit(main())
