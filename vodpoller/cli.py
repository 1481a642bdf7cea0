"""The `vodpoller` command: parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from vodpoller import __version__
from vodpoller.errors import ConfigError, VodpollerError, describe

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _emulator(args: argparse.Namespace) -> int:
    from vodpoller.emulator.server import Emulator, EmulatorOptions

    options = EmulatorOptions(
        host=args.host,
        port=args.port,
        secret_id=args.secret_id,
        secret_key=args.secret_key,
        lease_seconds=args.lease_seconds,
        long_poll_seconds=args.long_poll_seconds,
        max_events=args.max_events,
        rate_limit=args.rate_limit,
        latency_ms=args.latency_ms,
        samples=args.samples,
        empty_response=args.empty_response,
        seed=args.seed,
    )
    try:
        emulator = Emulator(options)
    except OSError as error:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {error}") from error

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    queued = emulator.stats()["Queued"]
    print(
        f"VOD emulator listening on {emulator.url} "
        f"(SecretId {options.secret_id}, SecretKey {options.secret_key}); "
        f"{queued} event(s) queued. Ctrl-C stops it.",
        flush=True,
    )
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.server.server_close()
    return EXIT_OK


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def _add_emulator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

    parser = commands.add_parser(
        "emulator",
        help="run the local VOD emulator (PullEvents, ConfirmEvents, DescribeEventsState)",
        description="A local stand-in for the VOD reliable-callback API. Point the SDK at it "
        "with endpoint HOST:PORT and scheme http; admin endpoints live under /_emulator/.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8750, help="0 picks a free port (%(default)s)")
    parser.add_argument("--secret-id", default=DEFAULT_SECRET_ID, help="(%(default)s)")
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="(%(default)s)")
    parser.add_argument("--lease-seconds", type=_positive(float), default=30.0)
    parser.add_argument("--long-poll-seconds", type=_positive(float), default=5.0)
    parser.add_argument("--max-events", type=_positive(int), default=16)
    parser.add_argument(
        "--rate-limit",
        type=_positive(float),
        default=100.0,
        help="requests per second per action; 0 turns the limit off (%(default)s)",
    )
    parser.add_argument(
        "--latency-ms", type=_positive(float), default=0.0, help="added before every answer"
    )
    parser.add_argument(
        "--samples", action="store_true", help="enqueue one sample of every known event type"
    )
    parser.add_argument(
        "--empty-response",
        choices=["error", "null", "list"],
        default="error",
        help="an empty long-poll answers ResourceNotFound, EventSet null, or [] (%(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed for fault injection and generated events")
    parser.set_defaults(handler=_emulator)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vodpoller",
        description="Consume Tencent Cloud VOD event notifications into SQL, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"vodpoller {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulator(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        print(f"vodpoller: configuration error: {describe(error)}", file=sys.stderr)
        return EXIT_USAGE
    except VodpollerError as error:
        print(f"vodpoller: {describe(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
