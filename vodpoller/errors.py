"""The one exception tree of vodpoller; outside errors are wrapped where they enter."""

from __future__ import annotations


class VodpollerError(Exception):
    """Base of every error vodpoller raises on purpose."""


class ConfigError(VodpollerError):
    """The configuration or the command line is wrong: exit code 2."""


class SourceError(VodpollerError):
    """The VOD API (or the emulator) failed a call. The message is one line of bounded length.

    `code`: the API's error code, or ClientNetworkError (no complete answer), ServerNetworkError
    (an HTTP status other than 200), UnreadableAnswer, Stopped. `status`: the HTTP status when
    an answer came. `never_sent`: no byte of the request left (no connection): the service saw
    nothing. `ambiguous`: the request may have been applied although no usable answer said so.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
        never_sent: bool = False,
        ambiguous: bool = False,
    ):
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.status = status
        self.never_sent = never_sent
        self.ambiguous = ambiguous


class TransientSourceError(SourceError):
    """Worth retrying: network trouble, throttling, server-side hiccups, unreadable answers."""


class StoppedSourceError(TransientSourceError):
    """A stop request cut the call short; the caller is shutting down."""


class FatalSourceError(SourceError):
    """Retrying will not help until someone acts: credentials, permissions, bad parameters."""


class HandlesRejectedError(SourceError):
    """ConfirmEvents refused the handles (expired, unknown, malformed): those events come back
    and dedupe. Not a reason to stop anything."""


class StorageError(VodpollerError):
    """The database failed; the batch in flight is not confirmed."""


class SchemaError(VodpollerError):
    """The database answers, but it is not at the schema this vodpoller needs (or there is no
    database file at all): waiting will not help, `vodpoller migrate` will."""


def describe(error: BaseException) -> str:
    """One readable line with the chain of causes: `outer: inner: root`."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = _one_line(str(current)) or type(current).__name__
        if not parts or text not in parts[-1]:
            parts.append(text)
        if isinstance(current, SourceError) and current.code:
            break  # it already says the code and message of the SDK error beneath it
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return ": ".join(parts)


def _one_line(text: str) -> str:
    """A message without the SQL statement and the link SQLAlchemy append to a driver's error
    (kilobytes per batch in a log line), on one line."""
    text = text.split("\n[SQL: ", 1)[0].split("\n(Background on this error at:", 1)[0]
    return " ".join(text.split())
