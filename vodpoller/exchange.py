"""One HTTP/1.1 POST under a deadline for the whole exchange (name lookup, connect, proxy
tunnel, TLS, request, headers, body), which a stop request also cuts short; keep-alive
between calls. `requests` bounds each read, not the exchange, so this uses http.client over
a socket that never blocks past the deadline. One `HttpClient` per thread."""

from __future__ import annotations

import errno
import http.client
import io
import ipaddress
import os
import select
import selectors
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from vodpoller.proxy import Proxy

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

# How often a blocked operation looks at the stop request.
SLICE_SECONDS: Final = 0.1
READ_CHUNK: Final = 64 * 1024

# What went wrong, for the caller to classify.
NETWORK: Final = "network"  # no complete answer: refused, reset, closed, broken framing
TIMEOUT: Final = "timeout"  # the deadline passed
STOPPED: Final = "stopped"  # the stop request was set
UNDECODABLE: Final = "undecodable"  # an answer came, but its Content-Encoding cannot be undone
UNTRUSTED: Final = "untrusted"  # the server's TLS certificate does not verify

_T = TypeVar("_T")


class ExchangeError(Exception):
    """No usable answer. `sent`: a connection was made and the request went (or began to go)
    out, so the server may have acted on it."""

    def __init__(self, reason: str, *, kind: str, sent: bool, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.sent = sent
        self.status = status


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    content_type: str
    location: str | None
    body: bytes
    complete: bool  # False: the body was longer than allowed; only its start is here


@dataclass(frozen=True)
class Target:
    """Where requests go: `host:port`, over TLS unless `tls` is None, maybe through a proxy."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    proxy: Proxy | None = None


class _TimeUpError(Exception):
    pass


class _StopRequestedError(Exception):
    pass


class _Clock:
    """The deadline and stop request of the exchange in progress."""

    def __init__(self) -> None:
        self.deadline = 0.0
        self.stop: threading.Event | None = None

    def start(self, seconds: float, stop: threading.Event | None) -> None:
        self.deadline = time.monotonic() + seconds
        self.stop = stop

    def slice(self) -> float:
        """How long the next blocking step may wait; raises once the time is up or a stop
        was requested."""
        if self.stop is not None and self.stop.is_set():
            raise _StopRequestedError
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _TimeUpError
        return min(left, SLICE_SECONDS) if self.stop is not None else left


class _DeadlineSocket:
    """A connected socket whose blocking operations wait in slices and end at the clock's
    deadline or stop request. A socket timeout leaves a plain or TLS socket usable, so each
    slice that passes without data is simply waited again. What http.client needs of it."""

    def __init__(self, sock: socket.socket, clock: _Clock):
        self.sock = sock
        self._clock = clock

    def _waiting(self, operation: Callable[[], _T]) -> _T:
        while True:
            self.sock.settimeout(self._clock.slice())
            try:
                return operation()
            except TimeoutError:
                continue

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0) -> int:
        return self._waiting(lambda: self.sock.recv_into(buffer, nbytes))

    def sendall(self, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._waiting(partial(self.sock.send, view)) :]

    def handshake(self) -> None:
        sock = cast(ssl.SSLSocket, self.sock)
        self._waiting(sock.do_handshake)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class _Reader(io.RawIOBase):
    """The raw stream under http.client's buffered reader; closing it leaves the socket open
    for the next request on the connection."""

    def __init__(self, sock: _DeadlineSocket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        return self._sock.recv_into(buffer)


def _addresses(host: str, port: int, clock: _Clock) -> list[Any]:
    """getaddrinfo under the deadline: a name lookup cannot be interrupted, so it runs in a
    daemon thread that is left behind when time runs out."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    found: list[Any] = []
    done = threading.Event()

    def look() -> None:
        try:
            found.append(socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM))
        except OSError as error:
            found.append(error)
        finally:
            done.set()

    threading.Thread(target=look, name=f"resolve-{bare}", daemon=True).start()
    while not done.wait(clock.slice()):
        pass
    if isinstance(found[0], OSError):
        raise found[0]
    return cast(list[Any], found[0])


def _connect(host: str, port: int, clock: _Clock) -> socket.socket:
    """A TCP connection to the first address that answers, without blocking past the clock."""
    failure: OSError | None = None
    for family, kind, proto, _name, address in _addresses(host, port, clock):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    while not selector.select(clock.slice()):
                        pass
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as error:
            sock.close()
            failure = error
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure or OSError(errno.EADDRNOTAVAIL, f"no address for {host}")


def _tunnel(sock: _DeadlineSocket, target: Target, proxy: Proxy) -> None:
    """CONNECT host:port through the proxy; the TLS session then runs inside the tunnel."""
    authority = f"{target.host}:{target.port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    answer = http.client.HTTPResponse(cast(socket.socket, sock), method="CONNECT")
    answer.begin()
    if answer.status != 200:
        raise ExchangeError(
            f"the proxy {proxy.host}:{proxy.port} refused the tunnel: HTTP {answer.status}",
            kind=NETWORK,
            sent=False,
        )


class _Connection(http.client.HTTPConnection):
    """http.client's connection with our own way of connecting."""

    def __init__(self, target: Target, clock: _Clock):
        super().__init__(target.host, target.port)
        self._target = target
        self._clock = clock

    def connect(self) -> None:
        target, proxy = self._target, self._target.proxy
        where = (proxy.host, proxy.port) if proxy else (target.host, target.port)
        sock = _connect(*where, self._clock)
        try:
            if proxy is not None:
                _tunnel(_DeadlineSocket(sock, self._clock), target, proxy)
            if target.tls is not None:
                # From here the TLS socket owns the descriptor: it is the one to close.
                sock = target.tls.wrap_socket(
                    sock, server_hostname=target.host.strip("[]"), do_handshake_on_connect=False
                )
                _DeadlineSocket(sock, self._clock).handshake()
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._clock)

    def dropped(self) -> bool:
        """A kept-alive connection the server closed meanwhile (readable while idle)."""
        if self.sock is None:
            return False
        # One poll, no selector object per request: this runs before every call.
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))


class HttpClient:
    """POSTs to one target, one at a time, reusing the connection while the server allows."""

    def __init__(self, target: Target):
        self.target = target
        self._clock = _Clock()
        self._connection: _Connection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def post(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        seconds: float,
        stop: threading.Event | None = None,
        max_body: int,
        max_error_body: int,
    ) -> Reply:
        """POST / within `seconds` in all. The body of a 200 is read up to `max_body` bytes,
        any other up to `max_error_body` (enough to say what it was)."""
        self._clock.start(seconds, stop)
        connection = self._connection
        if connection is None or connection.dropped():
            self.close()
            connection = self._connection = _Connection(self.target, self._clock)
        sent = False
        try:
            self._clock.slice()  # a stop already requested: do not even connect
            if connection.sock is None:
                connection.connect()
            sent = True
            connection.request("POST", "/", body, dict(headers))
            response = connection.getresponse()
            reply = self._read(response, max_body if response.status == 200 else max_error_body)
        except _TimeUpError:
            self.close()
            raise ExchangeError(
                f"no complete answer within {seconds:g} s", kind=TIMEOUT, sent=sent
            ) from None
        except _StopRequestedError:
            self.close()
            raise ExchangeError("stopped before the answer came", kind=STOPPED, sent=sent) from None
        except ExchangeError as error:
            self.close()
            error.sent = error.sent and sent
            raise
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.close()
            kind = UNTRUSTED if isinstance(error, ssl.SSLCertVerificationError) else NETWORK
            reason = network_reason(error, connecting=not sent, target=self.target)
            raise ExchangeError(reason, kind=kind, sent=sent) from error
        if not reply.complete or reply.status != 200 or response.will_close:
            self.close()
        return reply

    def _read(self, response: http.client.HTTPResponse, limit: int) -> Reply:
        body = bytearray()
        complete = True
        while True:
            piece = response.read(min(READ_CHUNK, limit + 1 - len(body)))
            if not piece:
                break
            body += piece
            if len(body) > limit:
                del body[limit:]
                complete = False
                break
        if complete and response.length:  # http.client ends a short body without a word
            raise ExchangeError(
                f"connection closed after {len(body)} of {len(body) + response.length} bytes "
                "of the answer",
                kind=NETWORK,
                sent=True,
                status=response.status,
            )
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        decoded, complete = _decoded(encoding, bytes(body), limit, complete, response.status)
        return Reply(
            status=response.status,
            reason=response.reason,
            content_type=response.getheader("Content-Type") or "",
            location=response.getheader("Location"),
            body=decoded,
            complete=complete,
        )


def _decoded(
    encoding: str, body: bytes, limit: int, complete: bool, status: int
) -> tuple[bytes, bool]:
    """Undo gzip or deflate (we ask for identity, but a gateway may compress anyway)."""
    if encoding in ("identity", ""):
        return body, complete
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ExchangeError(
            f"the answer uses Content-Encoding {encoding[:40]!r}, which vodpoller cannot read",
            kind=UNDECODABLE,
            sent=True,
            status=status,
        )
    # gzip: a gzip header; deflate: zlib-wrapped as the RFC says, or raw as some servers send.
    kinds = (16 + zlib.MAX_WBITS,) if "gzip" in encoding else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in kinds:
        inflater = zlib.decompressobj(wbits)
        try:
            decoded = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(decoded) > limit:
            return decoded[:limit], False
        if inflater.eof or not complete:
            return decoded, complete
    raise ExchangeError(
        f"the answer says Content-Encoding {encoding}, but its body is not {encoding} data",
        kind=UNDECODABLE,
        sent=True,
        status=status,
    )


def network_reason(error: BaseException, *, connecting: bool, target: Target) -> str:
    """A short phrase for what the network did."""
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {target.host}: {error.strerror or error}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the TLS certificate of {target.host} does not verify: {error.verify_message}"
    if isinstance(error, http.client.RemoteDisconnected):
        text = "connection closed before an answer"
    elif isinstance(error, http.client.IncompleteRead):
        text = "the body ended early (broken chunked encoding or connection closed)"
    elif isinstance(error, http.client.LineTooLong):
        text = "an answer with an overlong status or header line"
    elif isinstance(error, http.client.BadStatusLine):
        text = "not an HTTP answer"
    elif isinstance(error, ssl.SSLError):
        text = f"TLS error: {error.reason or error}"
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror.lower()
    else:
        text = str(error) or type(error).__name__
    if connecting:
        where = f"{target.proxy.host}:{target.proxy.port}" if target.proxy else target.host
        return f"cannot connect to {where}: {text}"
    return text
