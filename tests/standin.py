"""A raw HTTP stand-in for the VOD API: a threaded socket server that reads each request and
plays a scripted answer byte for byte (any status, framing, encoding or pace). For the
bad-input corpus; unlike the emulator, nothing here is well-behaved on purpose."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

CLOSE = False  # what a play returns to end the connection
KEEP_ALIVE = True


@dataclass(frozen=True)
class Request:
    head: bytes
    body: bytes

    @property
    def action(self) -> str:
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-tc-action":
                return value.strip().decode()
        return ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Wire:
    """The connection a play writes to; `wait` sleeps unless the stand-in is closing."""

    sock: socket.socket
    closing: threading.Event

    def send(self, data: bytes) -> None:
        self.sock.settimeout(30)  # a slow reader of a big answer is not an error here
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(0.2)

    def wait(self, seconds: float) -> None:
        self.closing.wait(seconds)


Play = Callable[[Wire, Request], bool]


@dataclass
class StandIn:
    """Serves `plays` in turn, one per request (the last one again when they run out), over
    TLS with `tls`. Counts the connections made and those the client closed."""

    plays: Sequence[Play]
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._served = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> StandIn:
        thread = threading.Thread(target=self._accept, name="standin", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                connection.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self._connections.append(connection)
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next_play(self, request: Request) -> Play:
        with self._lock:
            self.requests.append(request)
            play = self.plays[min(self._served, len(self.plays) - 1)]
            self._served += 1
            return play

    def _serve(self, connection: socket.socket) -> None:
        try:
            if self.tls is not None:
                connection.settimeout(5)
                connection = self.tls.wrap_socket(connection, server_side=True)
            connection.settimeout(0.2)
            reader = _Reader(connection, self._closing)
            while not self._closing.is_set():
                request = reader.request()
                if request is None:
                    if not self._closing.is_set():
                        with self._lock:
                            self.closed_by_client += 1
                    return
                if not self._next_play(request)(Wire(connection, self._closing), request):
                    return
        except OSError:
            return  # the client went away: that is its right
        finally:
            connection.close()


class _Reader:
    def __init__(self, connection: socket.socket, closing: threading.Event):
        self._connection = connection
        self._closing = closing
        self._buffer = b""

    def _more(self) -> bool:
        while not self._closing.is_set():
            try:
                data = self._connection.recv(65536)
            except TimeoutError:
                continue
            self._buffer += data
            return bool(data)
        return False

    def request(self) -> Request | None:
        while b"\r\n\r\n" not in self._buffer:
            if not self._more():
                return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self._buffer) < length:
            if not self._more():
                return None
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Request(head, body)


# -- plays ------------------------------------------------------------------------------------


def head(
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    reason: str = "Whatever",
    content_type: str | None = "application/json",
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(
    body: bytes | str | Callable[[], bytes] | Any = b"",
    status: int = 200,
    *,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    encoding: str | None = None,
) -> Play:
    """A well-framed answer (Content-Length) on a kept-alive connection. `body`: bytes as
    they are, str as UTF-8, a function for bytes made only when needed, else JSON."""

    def play(wire: Wire, request: Request) -> bool:
        data = body() if callable(body) else _bytes(body)
        if encoding == "gzip":
            data = gzip.compress(data)
        extra = {**(headers or {}), "Content-Length": str(len(data))}
        if encoding is not None:
            extra["Content-Encoding"] = encoding
        wire.send(head(status, extra, content_type=content_type) + data)
        return KEEP_ALIVE

    return play


def raw(data: bytes) -> Play:
    """These bytes, then the connection closes."""

    def play(wire: Wire, request: Request) -> bool:
        wire.send(data)
        return CLOSE

    return play


def stall(data: bytes = b"", seconds: float = 60.0) -> Play:
    """These bytes, then nothing for a long while (until the stand-in closes)."""

    def play(wire: Wire, request: Request) -> bool:
        wire.send(data)
        wire.wait(seconds)
        return CLOSE

    return play


def trickle(data: bytes, every: float) -> Play:
    """The bytes one at a time, `every` seconds apart."""

    def play(wire: Wire, request: Request) -> bool:
        for byte in data:
            wire.send(bytes([byte]))
            wire.wait(every)
        return CLOSE

    return play


def chunked(pieces: Sequence[bytes], *, end: bytes = b"0\r\n\r\n") -> Play:
    """A chunked body; another `end` leaves it unfinished, and the connection closes."""

    def play(wire: Wire, request: Request) -> bool:
        body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        wire.send(head(200, {"Transfer-Encoding": "chunked"}) + body + end)
        return KEEP_ALIVE if end == b"0\r\n\r\n" else CLOSE

    return play


def _bytes(body: bytes | str | Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class Relay:
    """An HTTP CONNECT proxy: answers `status` to the CONNECT (200: then copies bytes both
    ways to the host asked for). Keeps each CONNECT request's head."""

    def __init__(self, status: int = 200):
        self.status = status
        self.heads: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> Relay:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._sockets.append(client)
            self._spawn(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        client.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = client.recv(4096)
            if not piece:
                return
            data += piece
        head_bytes = data.partition(b"\r\n\r\n")[0]
        self.heads.append(head_bytes)
        if self.status != 200:
            client.sendall(f"HTTP/1.1 {self.status} No\r\nContent-Length: 0\r\n\r\n".encode())
            return
        host, _, port = head_bytes.split(b" ")[1].decode().rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self._sockets.append(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._spawn(self._copy, upstream, client)
        self._copy(client, upstream)

    def _copy(self, source: socket.socket, target: socket.socket) -> None:
        source.settimeout(0.2)
        while not self._closing.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return
