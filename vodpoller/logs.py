"""structlog set-up: JSON or console lines, stdlib loggers routed through the same processors,
and a processor that redacts secrets before anything is rendered."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
# Keys whose values are secret whatever they hold.
_SECRET_KEY = re.compile(r"secret|password|passwd|token|authorization|credential", re.IGNORECASE)
# user:password@ in URLs (database URLs, proxies).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)
# What the SDK would print of a request if its debug logger were on.
_AUTH_HEADER = re.compile(r"(TC3-HMAC-SHA256\s+Credential=)[^\s'\"]+[^'\"]*", re.IGNORECASE)
_SDK_LOGGER = "tencentcloud_sdk_common"


class SecretRedactor:
    """Replace secret values wherever they appear in a log event, however deeply nested."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
        return _AUTH_HEADER.sub(rf"\g<1>{REDACTED}", text)

    def _value(self, key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, MutableMapping):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        # Anything else is rendered through repr() later: redact that text now.
        return self._text(str(value) if isinstance(value, BaseException) else repr(value))

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        return {key: self._value(key, value) for key, value in event_dict.items()}


_redactor = SecretRedactor()


def add_secrets(secrets: Iterable[str]) -> None:
    """Values to redact from now on (the configured secret key, database passwords, ...)."""
    _redactor.secrets = SecretRedactor([*_redactor.secrets, *secrets]).secrets


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redactor,
    ]


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to one handler on `stream` (stderr by default)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDK's debug lines carry the Authorization header and tokens: never let them out.
    logging.getLogger(_SDK_LOGGER).setLevel(logging.WARNING)
    # A line per job run or per migration step is noise; the poller logs what each run did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
