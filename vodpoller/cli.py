"""The `vodpoller` command: parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vodpoller import __version__, app, entry, logs
from vodpoller.arguments import number
from vodpoller.config import Settings, config_path, load_settings
from vodpoller.errors import ConfigError, VodpollerError, describe
from vodpoller.events_cli import add_events_command
from vodpoller.signals import on_stop, until_stopped
from vodpoller.status_cli import add_status_command

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> tuple[Settings, str]:
    path = config_path(args.config, os.environ)
    return load_settings(path), str(path)


def _run(args: argparse.Namespace) -> int:
    from vodpoller import daemon

    settings, path = _settings(args)
    app.configure_logging(settings)
    return daemon.run(settings, Path(path), run_migrations=not args.no_migrate)


def _once(args: argparse.Namespace) -> int:
    settings, _ = _settings(args)
    app.configure_logging(settings)
    stop = threading.Event()
    # Ctrl-C: stop pulling, store and confirm what is in hand, then say what was done.
    with on_stop(stop.set):
        try:
            result = app.run_once(settings, run_migrations=not args.no_migrate, stop=stop)
        except app.Interrupted:
            print("vodpoller: stopped before the first pull", file=sys.stderr)
            return EXIT_FAILURE
    print(result.summary(), flush=True)
    if stop.is_set():
        print("vodpoller: interrupted: the summary counts what was done", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from vodpoller import migrate

    settings, _ = _settings(args)
    app.configure_logging(settings)
    store = app.open_store(settings, run_migrations=True)
    try:
        revision = migrate.current_revision(store.engine)
    finally:
        store.dispose()
    print(f"schema at revision {revision} (the newest)")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from vodpoller.checks import run_checks

    settings, path = _settings(args)
    logs.configure("warning", "console")
    failed = []
    for probe in run_checks(settings, path, no_migrate=args.no_migrate):
        print(f"{'ok' if probe.ok else 'FAIL':<4}  {probe.name}: {probe.detail}", flush=True)
        if not probe.ok:
            failed.append(probe)
    if not failed:
        return EXIT_OK
    print(f"{len(failed)} check(s) failed", file=sys.stderr)
    # As `run` and `once` would: a problem in the configuration (no credentials) exits 2.
    return EXIT_USAGE if any(probe.misconfigured for probe in failed) else EXIT_FAILURE


def _demo(_args: argparse.Namespace) -> int:
    from vodpoller.demo import run_demo

    return run_demo(sys.stdout)


def _emulator(args: argparse.Namespace) -> int:
    from vodpoller.emulator.server import DEFAULT_SECRET_KEY, Emulator, EmulatorOptions

    try:
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
    except ValueError as error:
        raise ConfigError(str(error)) from error
    try:
        emulator = Emulator(options)
    except OSError as error:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {error}") from error

    queued = emulator.stats()["Queued"]
    # The built-in test key is public and needed to sign; a key of the user's own is not shown.
    # Keep "listening on http://HOST:PORT " as it is: tests and bench/ parse it.
    key = options.secret_key if options.secret_key == DEFAULT_SECRET_KEY else "(as given)"
    with until_stopped() as stopped, emulator:
        print(
            f"VOD emulator listening on {emulator.url} "
            f"(SecretId {options.secret_id}, SecretKey {key}); "
            f"{queued} event(s) queued. Ctrl-C stops it.",
            flush=True,
        )
        stopped.wait()
    return EXIT_OK


def _add_emulator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vodpoller.emulator.api import EMPTY_RESPONSES, MAX_PULL_EVENTS
    from vodpoller.emulator.server import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

    parser = commands.add_parser(
        "emulator",
        help="run the local VOD emulator (PullEvents, ConfirmEvents, DescribeEventsState)",
        description="A local stand-in for the VOD reliable-callback API. Point the SDK at it "
        "with endpoint HOST:PORT and scheme http; admin endpoints live under /_emulator/.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=number(int, at_least=0, at_most=65535),
        default=8750,
        help="0 picks a free port (%(default)s)",
    )
    parser.add_argument("--secret-id", default=DEFAULT_SECRET_ID, help="(%(default)s)")
    parser.add_argument(
        "--secret-key",
        default=DEFAULT_SECRET_KEY,
        help="(%(default)s, the public test key; a key given here is never printed)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=number(float, above=0),
        default=30.0,
        help="more than 0 (%(default)s)",
    )
    parser.add_argument(
        "--long-poll-seconds",
        type=number(float, at_least=0),
        default=5.0,
        help="0 or more (%(default)s)",
    )
    parser.add_argument(
        "--max-events",
        type=number(int, at_least=1, at_most=MAX_PULL_EVENTS),
        default=MAX_PULL_EVENTS,
        help=f"events per PullEvents answer, 1 to {MAX_PULL_EVENTS} (%(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=number(float, at_least=0),
        default=100.0,
        help="requests per second per action; 0 turns the limit off (%(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=number(float, at_least=0),
        default=0.0,
        help="added before every answer",
    )
    parser.add_argument(
        "--samples", action="store_true", help="enqueue one sample of every known event type"
    )
    parser.add_argument(
        "--empty-response",
        choices=EMPTY_RESPONSES,
        default="error",
        help="an empty long-poll answers ResourceNotFound, EventSet null, or [] (%(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed for fault injection and generated events")
    parser.set_defaults(handler=_emulator)


def _config_option() -> argparse.ArgumentParser:
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        metavar="PATH",
        help="the TOML configuration (default: $VODPOLLER_CONFIG, else /etc/vodpoller/config.toml)",
    )
    return config


def _add_daemon_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], config: argparse.ArgumentParser
) -> None:
    no_migrate = argparse.ArgumentParser(add_help=False)
    no_migrate.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not bring the schema to the newest revision first: stop if it is not there",
    )
    check_no_migrate = argparse.ArgumentParser(add_help=False)
    check_no_migrate.add_argument(
        "--no-migrate",
        action="store_true",
        help="the daemon will run with --no-migrate: the schema must be at the newest revision",
    )
    commands.add_parser(
        "run",
        parents=[config, no_migrate],
        help="the daemon: drain every application until SIGTERM/SIGINT",
    ).set_defaults(handler=_run)
    commands.add_parser(
        "once",
        parents=[config, no_migrate],
        help="drain every application until a pull comes back empty, print a summary",
    ).set_defaults(handler=_once)
    commands.add_parser(
        "migrate", parents=[config], help="bring the database schema to the newest revision"
    ).set_defaults(handler=_migrate)
    commands.add_parser(
        "check",
        parents=[config, check_no_migrate],
        help="validate the configuration, reach the database and the VOD API",
    ).set_defaults(handler=_check)
    commands.add_parser(
        "demo",
        help="no configuration needed: the emulator's samples drained into ./vodpoller-demo.db",
    ).set_defaults(handler=_demo)


class _CommandParser(argparse.ArgumentParser):
    """Unknown arguments are refused by the command they were given to, with its usage, rather
    than by `vodpoller` with the list of every command."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _CommandParser(
        prog="vodpoller",
        description="Consume Tencent Cloud VOD event notifications into SQL, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"vodpoller {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = _config_option()
    _add_daemon_commands(commands, config)
    add_events_command(commands, config)
    add_status_command(commands, config)
    _add_emulator(commands)
    return parser


# The commands that install stop handlers of their own, taking over a signal that came while
# the program was starting (entry.py).
_STOPPABLE = frozenset({"run", "once"})


def main(
    argv: Sequence[str] | None = None,
    *,
    early_handlers: Mapping[Any, Any] | None = None,
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    if early_handlers is not None and args.command not in _STOPPABLE:
        for signum, previous in early_handlers.items():
            signal.signal(signum, previous)
        if entry.early:
            return EXIT_OK  # asked to stop before it began
    try:
        return handler(args)
    except ConfigError as error:
        print(f"vodpoller: {describe(error)}", file=sys.stderr)
        return EXIT_USAGE
    except VodpollerError as error:
        print(f"vodpoller: {describe(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (`vodpoller events list | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
