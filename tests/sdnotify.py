"""A service manager's end of the notify protocol: a real AF_UNIX datagram socket that collects
what a daemon sends, for tests of `vodpoller.notify` and of `vodpoller run` under it."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from types import TracebackType


class NotifySocket:
    """Bound at `path`, or at a random abstract name when `path` is None; `address` is what
    goes into `$NOTIFY_SOCKET`."""

    def __init__(self, path: Path | None = None):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"vodpoller-test-{uuid.uuid4().hex}"
            self.socket.bind("\0" + name)
            self.address = "@" + name
        else:
            self.socket.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float = 5.0) -> dict[str, str] | None:
        """The next datagram as `{KEY: value}`, or None when none came within `timeout`."""
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(4096)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: timeout 0, nothing waiting
            return None
        message = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout: float = 30.0) -> dict[str, str]:
        """Read until a message carries `key`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message:
                return message
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def drain(self) -> list[dict[str, str]]:
        """Whatever is waiting now."""
        got = []
        while (message := self.receive(0.0)) is not None:
            got.append(message)
        return got

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
