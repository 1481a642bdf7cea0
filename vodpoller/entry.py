"""The `vodpoller` command's first instant: a stop signal that comes while the program is
still importing (a second of start-up) is caught here, not left to kill the process; the
daemon's own handlers take it over (signals.on_stop), every other command gets the defaults
back. Then the real command line (cli.py)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Stop signals received before a command installed its own handlers, oldest first.
early: list[int] = []


def _catch(signum: int, _frame: FrameType | None) -> None:
    early.append(signum)


def main(argv: Sequence[str] | None = None) -> int:
    previous = {signum: signal.signal(signum, _catch) for signum in STOP_SIGNALS}
    from vodpoller.cli import main as command_line

    return command_line(argv, early_handlers=previous)


if __name__ == "__main__":
    sys.exit(main())
