"""`proxy`: HTTPS_PROXY and NO_PROXY read as curl and requests read them; never a proxy for a
loopback endpoint."""

from __future__ import annotations

import pytest

from vodpoller import proxy
from vodpoller.proxy import Proxy


def test_no_proxy_variable_means_a_direct_connection() -> None:
    assert proxy.from_environment("vod.tencentcloudapi.com", {}) is None


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy"])
def test_https_proxy_is_used_for_the_api(name: str) -> None:
    found = proxy.from_environment("vod.tencentcloudapi.com", {name: "http://proxy.lan:3128"})
    assert found == Proxy("proxy.lan", 3128, None)


def test_a_proxy_without_scheme_or_port_is_http_on_80() -> None:
    assert proxy.from_environment("vod.example", {"HTTPS_PROXY": "proxy.lan"}) == Proxy(
        "proxy.lan", 80, None
    )


def test_credentials_in_the_proxy_url_become_basic_authorization_and_are_never_shown() -> None:
    found = proxy.from_environment("vod.example", {"HTTPS_PROXY": "http://us%40er:p%3Ass@p:8080"})
    assert found == Proxy("p", 8080, "Basic dXNAZXI6cDpzcw==")  # base64 of "us@er:p:ss"
    assert repr(found) == "Proxy(p:8080)"


@pytest.mark.parametrize(
    "no_proxy",
    [
        "tencentcloudapi.com",
        ".tencentcloudapi.com",
        "vod.tencentcloudapi.com:443",
        "*",
        "a, vod.tencentcloudapi.com",
    ],
)
def test_no_proxy_covers_a_host_and_its_subdomains(no_proxy: str) -> None:
    env = {"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy}
    assert proxy.from_environment("vod.tencentcloudapi.com", env) is None


@pytest.mark.parametrize("no_proxy", ["cloudapi.com", "other.tencentcloudapi.com", ""])
def test_no_proxy_does_not_cover_other_hosts(no_proxy: str) -> None:
    env = {"HTTPS_PROXY": "http://p:1", "no_proxy": no_proxy}
    assert proxy.from_environment("vod.tencentcloudapi.com", env) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.9.9.9"])
def test_a_loopback_endpoint_never_goes_through_a_proxy(host: str) -> None:
    assert proxy.from_environment(host, {"HTTPS_PROXY": "http://p:1"}) is None


def test_an_https_proxy_url_is_refused_without_showing_its_credentials() -> None:
    with pytest.raises(ValueError, match="must be an http:// proxy URL") as caught:
        proxy.from_environment("vod.example", {"HTTPS_PROXY": "https://user:secret@p:443"})
    assert "secret" not in str(caught.value)
