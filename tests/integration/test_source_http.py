"""`VodEventSource` over real sockets against the raw stand-in: handles confirmed byte for
byte as received, what ConfirmEvents' answers mean, the deadline and the stop request,
kept-alive and per-thread connections, TLS and an HTTPS proxy tunnel."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from tencentcloud.common.credential import Credential

from tests.integration.test_source_corpus import entry, envelope, error
from tests.standin import Relay, StandIn, answer, head, raw, stall
from vodpoller.config import VodSettings
from vodpoller.errors import (
    FatalSourceError,
    HandlesRejectedError,
    SourceError,
    StoppedSourceError,
    TransientSourceError,
)
from vodpoller.exchange import ExchangeError, HttpClient, Target
from vodpoller.proxy import Proxy
from vodpoller.source import VodEventSource

CONFIRMED = {"Response": {"RequestId": "req-c"}}


def make_source(
    endpoint: str,
    *,
    seconds: float = 10.0,
    stop: threading.Event | None = None,
    scheme: str = "http",
    tls: ssl.SSLContext | None = None,
) -> VodEventSource:
    vod = VodSettings(
        endpoint=endpoint,
        scheme=scheme,  # type: ignore[arg-type]
        secret_id=SecretStr("AKIDstandin"),
        secret_key=SecretStr("standin-key"),
    )
    credential = Credential("AKIDstandin", "standin-key")
    return VodEventSource(vod, credential, 0, stop=stop, tls=tls, request_timeout_seconds=seconds)


@pytest.fixture
def closing() -> Iterator[list[VodEventSource]]:
    """Sources to close after the test."""
    sources: list[VodEventSource] = []
    yield sources
    for source in sources:
        source.close()


def failure_of(call: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        call()
    return caught.value


# -- handles ----------------------------------------------------------------------------------

ODD_HANDLES = [
    pytest.param("h" * 100_000, id="100 kB long"),
    pytest.param("quote\" back\\slash /<>&' tab\t newline\n nul\x00 del\x7f", id="odd ASCII"),
    pytest.param("事件句柄-ハンドル-😀", id="unicode"),
    pytest.param("cut \ud83d and \udc80 halves", id="lone surrogates"),
    pytest.param(" spaces around ", id="spaces"),
    pytest.param('{"EventHandle":"inner"}', id="JSON inside"),
]


@pytest.mark.parametrize("handle", ODD_HANDLES)
def test_a_handle_is_confirmed_exactly_as_it_was_received(
    handle: str, closing: list[VodEventSource]
) -> None:
    with StandIn([answer(envelope(entry(handle))), answer(CONFIRMED)]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        batch = source.pull(None)
        [delivery] = batch.deliveries
        assert delivery.handle == handle
        source.confirm(None, [delivery.handle])

    confirm = stand_in.requests[1]
    assert confirm.action == "ConfirmEvents"
    assert confirm.json() == {"EventHandles": [handle]}


def test_a_handle_written_with_escapes_is_sent_back_as_the_same_string(
    closing: list[VodEventSource],
) -> None:
    text = '{"Response":{"EventSet":[{"EventHandle":"\\u4e8b\\u0041\\/x"}],"RequestId":"r"}}'
    with StandIn([answer(text), answer(CONFIRMED)]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        [delivery] = source.pull(None).deliveries
        source.confirm(None, [delivery.handle or ""])

    assert delivery.handle == "事A/x"
    assert stand_in.requests[1].json()["EventHandles"] == ["事A/x"]


def test_a_sub_app_id_goes_with_pull_and_confirm(closing: list[VodEventSource]) -> None:
    with StandIn([answer(envelope(entry("h-1"))), answer(CONFIRMED)]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        batch = source.pull(1500000001)
        source.confirm(1500000001, ["h-1"])

    assert batch.sub_app_id == 1500000001
    assert [r.json() for r in stand_in.requests] == [
        {"SubAppId": 1500000001},
        {"EventHandles": ["h-1"], "SubAppId": 1500000001},
    ]


# -- what ConfirmEvents answers mean ----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "InvalidParameterValue",
        "InvalidParameter",
        "InvalidParameterValue.EventHandle",
        "InvalidParameter.ExpiredHandle",
        "RequestSizeLimitExceeded",
    ],
)
def test_a_parameter_error_to_a_confirm_means_the_handles_are_gone(
    code: str, closing: list[VodEventSource]
) -> None:
    with StandIn([answer(error(code, "EventHandle expired"))]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        failure = failure_of(lambda: source.confirm(None, ["h-1", "h-2"]))

    assert type(failure) is HandlesRejectedError
    assert failure.code == code
    assert str(failure) == f"ConfirmEvents failed: {code}: EventHandle expired (RequestId req-e)"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InvalidParameterValue.SubAppId", FatalSourceError),
        ("AuthFailure.SecretIdNotFound", FatalSourceError),
        ("UnauthorizedOperation", FatalSourceError),
        ("InternalError", TransientSourceError),
    ],
)
def test_other_errors_to_a_confirm_keep_their_kind(
    code: str, kind: type[SourceError], closing: list[VodEventSource]
) -> None:
    with StandIn([answer(error(code))]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        failure = failure_of(lambda: source.confirm(None, ["h-1"]))

    assert type(failure) is kind
    assert not failure.ambiguous  # the service answered: it did not apply the confirm


@pytest.mark.parametrize(
    ("play", "code"),
    [
        (answer(b"", 502, content_type=None), "ServerNetworkError"),
        (raw(b""), "ClientNetworkError"),
        (answer(b"<html>busy</html>", content_type="text/html"), "UnreadableAnswer"),
    ],
    ids=["502", "closed", "unreadable"],
)
def test_a_confirm_without_a_usable_answer_may_have_been_applied(
    play: Any, code: str, closing: list[VodEventSource]
) -> None:
    with StandIn([play]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        failure = failure_of(lambda: source.confirm(None, ["h-1"]))

    assert isinstance(failure, TransientSourceError)
    assert (failure.code, failure.ambiguous, failure.never_sent) == (code, True, False)


def test_a_confirm_answered_without_request_id_or_with_extra_fields_is_fine(
    closing: list[VodEventSource],
) -> None:
    with StandIn([answer({"Response": {"Extra": [1, 2], "Deep": {"a": {"b": 1}}}})]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        source.confirm(None, ["h-1"])


@pytest.mark.parametrize("handles", [[], ["h"] * 17, ["h", ""], ["h", None]])
def test_confirm_refuses_what_no_pull_gave(
    handles: list[Any], closing: list[VodEventSource]
) -> None:
    source = make_source("127.0.0.1:9")
    closing.append(source)
    with pytest.raises(ValueError, match=r"confirm takes 1 to 16|non-empty string"):
        source.confirm(None, handles)


# -- connecting, the deadline and the stop request --------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_never_reached_the_service(closing: list[VodEventSource]) -> None:
    source = make_source(f"127.0.0.1:{unused_port()}")
    closing.append(source)

    failure = failure_of(lambda: source.confirm(None, ["h-1"]))

    assert isinstance(failure, TransientSourceError)
    assert (failure.code, failure.never_sent, failure.ambiguous) == (
        "ClientNetworkError",
        True,
        False,
    )
    assert str(failure) == "ConfirmEvents failed: cannot connect to 127.0.0.1: connection refused"


def test_a_stop_request_cuts_a_stalled_pull_short(closing: list[VodEventSource]) -> None:
    stop = threading.Event()
    with StandIn([stall()]) as stand_in:
        source = make_source(stand_in.endpoint, seconds=30, stop=stop)
        closing.append(source)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        failure = failure_of(lambda: source.pull(None))
        elapsed = time.monotonic() - started

    assert type(failure) is StoppedSourceError
    assert (failure.code, failure.ambiguous, failure.never_sent) == ("Stopped", True, False)
    assert 0.3 <= elapsed < 2.0


def test_a_stop_request_before_the_call_sends_nothing(closing: list[VodEventSource]) -> None:
    stop = threading.Event()
    stop.set()
    with StandIn([answer(envelope(entry()))]) as stand_in:
        source = make_source(stand_in.endpoint, stop=stop)
        closing.append(source)
        failure = failure_of(lambda: source.pull(None))

    assert type(failure) is StoppedSourceError
    assert failure.never_sent
    assert stand_in.connections == 0


def test_a_confirm_still_goes_out_after_a_stop_request(closing: list[VodEventSource]) -> None:
    """On the way out the daemon confirms what it stored: a stop cuts pulls, not confirms."""
    stop = threading.Event()
    stop.set()
    with StandIn([answer(CONFIRMED)]) as stand_in:
        source = make_source(stand_in.endpoint, stop=stop)
        closing.append(source)
        source.confirm(None, ["h-1"])

    assert [r.json() for r in stand_in.requests] == [{"EventHandles": ["h-1"]}]


def test_the_deadline_covers_a_stall_before_the_first_byte(
    closing: list[VodEventSource],
) -> None:
    with StandIn([stall()]) as stand_in:
        source = make_source(stand_in.endpoint, seconds=0.5)
        closing.append(source)
        started = time.monotonic()
        failure = failure_of(lambda: source.pull(None))
        elapsed = time.monotonic() - started

    assert str(failure) == "PullEvents failed: no complete answer within 0.5 s"
    assert 0.5 <= elapsed < 1.5


def test_batch_times_are_when_the_pull_was_sent_and_when_it_was_answered(
    closing: list[VodEventSource],
) -> None:
    def late(wire: Any, request: Any) -> bool:
        wire.wait(0.3)
        return answer(envelope(entry()))(wire, request)

    with StandIn([late]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        before = time.monotonic()
        batch = source.pull(None)
        after = time.monotonic()

    assert before <= batch.sent_at < before + 0.2
    assert batch.sent_at + 0.3 <= batch.answered_at <= after


# -- connections ------------------------------------------------------------------------------


def test_one_thread_reuses_its_connection(closing: list[VodEventSource]) -> None:
    with StandIn([answer(envelope(entry()))]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        for _ in range(3):
            source.pull(None)

    assert (len(stand_in.requests), stand_in.connections) == (3, 1)


def test_a_connection_the_server_closed_while_idle_is_replaced(
    closing: list[VodEventSource],
) -> None:
    def answer_then_hang_up(wire: Any, request: Any) -> bool:
        answer(envelope(entry()))(wire, request)
        return False

    with StandIn([answer_then_hang_up]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        source.pull(None)
        time.sleep(0.1)
        source.pull(None)

    assert (len(stand_in.requests), stand_in.connections) == (2, 2)


def test_each_thread_has_its_own_connection_and_a_finished_threads_is_closed(
    closing: list[VodEventSource],
) -> None:
    with StandIn([answer(envelope(entry()))]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        worker = threading.Thread(target=source.pull, args=(None,))
        worker.start()
        worker.join()
        source.pull(None)  # a new thread's caller: the finished one's connection is closed
        deadline = time.monotonic() + 5
        while stand_in.closed_by_client < 1 and time.monotonic() < deadline:
            time.sleep(0.01)

        assert (stand_in.connections, stand_in.closed_by_client) == (2, 1)
        source.close()
        while stand_in.closed_by_client < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stand_in.closed_by_client == 2


# -- TLS and the proxy ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (the openssl command line)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl command"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_a_pull_over_tls(certificate: tuple[Path, Path], closing: list[VodEventSource]) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    plays = [answer(envelope(entry("h-tls"))), answer(CONFIRMED)]
    with StandIn(plays, tls=server_tls(certificate)) as stand_in:
        endpoint = stand_in.endpoint.replace("127.0.0.1", "localhost")
        source = make_source(endpoint, scheme="https", tls=trusting)
        closing.append(source)
        [delivery] = source.pull(None).deliveries
        source.confirm(None, ["h-tls"])

    assert delivery.handle == "h-tls"
    assert stand_in.connections == 1


def test_a_certificate_that_does_not_verify_is_fatal_and_sends_nothing(
    certificate: tuple[Path, Path], closing: list[VodEventSource]
) -> None:
    with StandIn([answer(envelope(entry()))], tls=server_tls(certificate)) as stand_in:
        endpoint = stand_in.endpoint.replace("127.0.0.1", "localhost")
        source = make_source(endpoint, scheme="https")  # the usual CA bundle
        closing.append(source)
        failure = failure_of(lambda: source.pull(None))

    assert type(failure) is FatalSourceError
    assert failure.never_sent
    assert "the TLS certificate of localhost does not verify" in str(failure)
    assert stand_in.requests == []


def test_https_goes_through_the_proxy_tunnel(certificate: tuple[Path, Path]) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    with (
        StandIn([answer(envelope(entry("h-proxied")))], tls=server_tls(certificate)) as stand_in,
        Relay() as relay,
    ):
        port = int(stand_in.endpoint.rsplit(":", 1)[1])
        proxy = Proxy("127.0.0.1", relay.port, "Basic dXNlcjpwYXNz")
        client = HttpClient(Target("localhost", port, trusting, proxy))
        try:
            reply = client.post(
                {"Host": f"localhost:{port}"}, b"{}", seconds=5, max_body=1000, max_error_body=100
            )
        finally:
            client.close()

    assert json.loads(reply.body)["Response"]["EventSet"][0]["EventHandle"] == "h-proxied"
    assert relay.heads == [
        f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
        "Proxy-Authorization: Basic dXNlcjpwYXNz".encode()
    ]


def test_a_proxy_that_refuses_the_tunnel_means_nothing_was_sent() -> None:
    with Relay(status=407) as relay:
        port = relay.port
        proxy = Proxy("127.0.0.1", port, None)
        client = HttpClient(
            Target("vod.tencentcloudapi.com", 443, ssl.create_default_context(), proxy)
        )
        with pytest.raises(ExchangeError) as caught:
            client.post({}, b"{}", seconds=5, max_body=1000, max_error_body=100)
        client.close()

    assert caught.value.sent is False
    assert str(caught.value) == f"the proxy 127.0.0.1:{port} refused the tunnel: HTTP 407"


def test_an_answer_without_keep_alive_closes_the_connection(
    closing: list[VodEventSource],
) -> None:
    body = json.dumps(envelope(entry())).encode()
    closing_answer = head(200, {"Content-Length": str(len(body)), "Connection": "close"}) + body
    with StandIn([raw(closing_answer)]) as stand_in:
        source = make_source(stand_in.endpoint)
        closing.append(source)
        source.pull(None)
        source.pull(None)

    assert stand_in.connections == 2
