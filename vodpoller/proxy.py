"""The HTTPS proxy that requests to VOD go through, from the environment as curl and requests
read it (HTTPS_PROXY, NO_PROXY); never one for a loopback endpoint."""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from vodpoller.config import is_loopback


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # a Proxy-Authorization value; never printed

    def __repr__(self) -> str:
        return f"Proxy({self.host}:{self.port})"


def from_environment(host: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """HTTPS_PROXY unless NO_PROXY covers `host`; never for loopback (the emulator). Only
    http:// proxies (the TLS session to VOD is tunnelled through CONNECT)."""
    environ = os.environ if environ is None else environ
    if is_loopback(host):
        return None
    url = environ.get("https_proxy") or environ.get("HTTPS_PROXY")
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    if not url or _bypassed(host, no_proxy):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"HTTPS_PROXY must be an http:// proxy URL (the proxy {parts.hostname} is not)"
        )
    authorization = None
    if parts.username is not None:
        user, password = (
            urllib.parse.unquote(part or "") for part in (parts.username, parts.password)
        )
        pair = f"{user}:{password}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.strip("[]").lower()
    for item in no_proxy.split(","):
        entry = item.strip().lower().lstrip(".")
        if entry == "*":
            return True
        if entry.count(":") == 1:  # host:port (an IPv6 address has more colons)
            entry = entry.rsplit(":", 1)[0]
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False
