"""`POST /_emulator/push`: normal callback as VOD sends it, to a real HTTP handler in the test:
one POST per event, the entry without `EventHandle`, retried while the answer is not 2xx."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from vodpoller.emulator import push as push_module
from vodpoller.emulator.admin import EmulatorAdmin
from vodpoller.emulator.server import Emulator

APP = 1500000001


def upload(file_id: str) -> dict[str, Any]:
    return {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id}}


def as_sent(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False).encode("utf-8")


@dataclass
class Received:
    path: str
    content_type: str | None
    body: bytes

    @property
    def file_id(self) -> str:
        return str(json.loads(self.body)["FileUploadEvent"]["FileId"])


@dataclass
class Callback:
    """A normal-callback handler: records every POST; `answer` picks each status."""

    url: str
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], int] = lambda _request: 200


@pytest.fixture
def callback() -> Iterator[Callback]:
    state = Callback("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Received(self.path, self.headers.get("Content-Type"), self.rfile.read(length))
            state.received.append(request)
            status = state.answer(request)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/vod/callback/token?x=1"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def counts(admin: EmulatorAdmin) -> tuple[int, int, int]:
    stats = admin.stats()
    return stats["Queued"], stats["Leased"], stats["Confirmed"]


def refused(admin: EmulatorAdmin, document: Any) -> str:
    with pytest.raises(urllib.error.HTTPError) as caught:
        admin._call("POST", "/_emulator/push", document)
    assert caught.value.code == 400
    return str(json.loads(caught.value.read())["Error"])


# -- queued events -------------------------------------------------------------------------


def test_queued_events_are_posted_one_each_without_handle_and_then_confirmed(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    entries = [upload("1"), {**upload("2"), "Note": "émoji \U0001f600"}]
    admin.enqueue(entries)
    summary = admin.push(callback.url)
    assert summary == {
        "Pushed": 2,
        "Failed": 0,
        "Attempts": 2,
        "Results": [{"Status": 200, "Attempts": 1}, {"Status": 200, "Attempts": 1}],
    }
    assert [r.path for r in callback.received] == ["/vod/callback/token?x=1"] * 2
    assert {r.content_type for r in callback.received} == {"application/json"}
    assert [r.body for r in callback.received] == [as_sent(e) for e in entries]
    assert counts(admin) == (0, 0, 2)


def test_count_takes_that_many_and_leaves_the_rest_queued(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    admin.enqueue([upload(str(i)) for i in range(5)])
    assert admin.push(callback.url, count=2)["Pushed"] == 2
    assert [r.file_id for r in callback.received] == ["0", "1"]
    assert counts(admin) == (3, 0, 2)
    assert admin.push(callback.url, count=0)["Pushed"] == 0


def test_only_the_named_application_is_pushed(admin: EmulatorAdmin, callback: Callback) -> None:
    admin.enqueue(upload("main"))
    admin.enqueue([upload("a1"), upload("a2")], sub_app_id=APP)
    assert admin.push(callback.url, sub_app_id=APP)["Pushed"] == 2
    assert [r.file_id for r in callback.received] == ["a1", "a2"]
    assert admin.stats()["Applications"]["default"] == {"Queued": 1, "Leased": 0, "Confirmed": 0}


def test_more_than_a_batch_is_pushed_in_order(admin: EmulatorAdmin, callback: Callback) -> None:
    admin.enqueue([upload(str(i)) for i in range(40)])
    assert admin.push(callback.url)["Pushed"] == 40
    assert [r.file_id for r in callback.received] == [str(i) for i in range(40)]


def test_queued_events_go_out_in_the_current_shape(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    admin.enqueue(upload("1"))
    admin.set_shape(null_keys=["Added"], payload_null_keys=["Inside"])
    admin.push(callback.url)
    assert json.loads(callback.received[0].body) == {
        "EventType": "NewFileUpload",
        "FileUploadEvent": {"FileId": "1", "Inside": None},
        "Added": None,
    }


# -- retries ---------------------------------------------------------------------------------


def test_an_answer_other_than_2xx_is_retried_until_2xx(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    statuses = iter([500, 302, 202])
    callback.answer = lambda _request: next(statuses)
    admin.enqueue(upload("1"))
    summary = admin.push(callback.url, retries=3)
    assert summary["Results"] == [{"Status": 202, "Attempts": 3}]
    assert (summary["Pushed"], summary["Attempts"]) == (1, 3)
    assert counts(admin) == (0, 0, 1)


def test_an_event_whose_every_try_failed_goes_back_to_the_queue(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    callback.answer = lambda request: 503 if request.file_id == "bad" else 200
    admin.enqueue([upload("bad"), *[upload(str(i)) for i in range(20)]])
    summary = admin.push(callback.url, retries=2)
    assert (summary["Pushed"], summary["Failed"], summary["Attempts"]) == (20, 1, 23)
    assert summary["Results"][0] == {"Status": 503, "Attempts": 3}
    # Tried three times, and not taken again by a later batch of the same push.
    assert [r.file_id for r in callback.received].count("bad") == 3
    assert counts(admin) == (1, 0, 20)
    callback.answer = lambda _request: 200
    assert admin.push(callback.url)["Pushed"] == 1
    assert counts(admin) == (0, 0, 21)


def test_no_retry_when_retries_is_zero(admin: EmulatorAdmin, callback: Callback) -> None:
    callback.answer = lambda _request: 500
    admin.enqueue(upload("1"))
    assert admin.push(callback.url, retries=0)["Results"] == [{"Status": 500, "Attempts": 1}]
    assert len(callback.received) == 1


def test_no_answer_is_a_failure_with_the_reason(admin: EmulatorAdmin) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    admin.enqueue(upload("1"))
    summary = admin.push(f"http://127.0.0.1:{port}/", retries=1)
    [result] = summary["Results"]
    assert (result["Status"], result["Attempts"]) == (None, 2)
    assert "ConnectionRefusedError" in result["Error"]
    assert counts(admin) == (1, 0, 0)


def test_a_handler_slower_than_the_timeout_is_a_failure(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    def slow(_request: Received) -> int:
        time.sleep(1.0)
        return 200

    callback.answer = slow
    admin.enqueue(upload("1"))
    [result] = admin.push(callback.url, retries=0, timeout_ms=200)["Results"]
    assert result["Status"] is None
    assert "timed out" in result["Error"]


# -- given events ---------------------------------------------------------------------------


def test_given_events_are_pushed_as_they_are_and_the_queue_is_untouched(
    admin: EmulatorAdmin, callback: Callback
) -> None:
    admin.enqueue(upload("queued"))
    admin.set_shape(null_keys=["NotForGivenEvents"])
    given = [{"EventHandle": "dropped", **upload("g1")}, upload("g2")]
    summary = admin.push(callback.url, events=given)
    assert summary["Pushed"] == 2
    assert [r.body for r in callback.received] == [as_sent(upload("g1")), as_sent(upload("g2"))]
    assert counts(admin) == (1, 0, 0)


# -- bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "mentioned"),
    [
        ([], "url"),
        ({}, "url"),
        ({"url": "https://127.0.0.1/x"}, "http://"),
        ({"url": "ftp://127.0.0.1/x"}, "http://"),
        ({"url": "http:///no-host"}, "no host"),
        ({"url": "http://127.0.0.1:99999/"}, "port"),
        ({"url": "http://127.0.0.1/a b"}, "whitespace"),
        ({"url": "http://127.0.0.1/", "retries": -1}, "retries"),
        ({"url": "http://127.0.0.1/", "retries": 11}, "retries"),
        ({"url": "http://127.0.0.1/", "retries": True}, "retries"),
        ({"url": "http://127.0.0.1/", "timeout_ms": 0}, "timeout_ms"),
        ({"url": "http://127.0.0.1/", "count": -1}, "count"),
        ({"url": "http://127.0.0.1/", "count": 1, "events": []}, "not both"),
        ({"url": "http://127.0.0.1/", "events": [1]}, "entry"),
        ({"url": "http://127.0.0.1/", "events": [{"A": "\ud800"}]}, "lone surrogate"),
        ({"url": "http://127.0.0.1/", "sub_app_id": "x"}, "sub_app_id"),
        ({"url": "http://127.0.0.1/", "retry": 1}, "retry"),
    ],
)
def test_bad_push_request_is_refused_and_pushes_nothing(
    emulator: Emulator, admin: EmulatorAdmin, callback: Callback, document: Any, mentioned: str
) -> None:
    admin.enqueue(upload("1"))
    assert mentioned in refused(admin, document)
    assert callback.received == []
    assert counts(admin) == (1, 0, 0)


def test_events_not_pushed_when_the_push_fails_unexpectedly_go_back_to_the_queue(
    admin: EmulatorAdmin, callback: Callback, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = push_module.push
    calls = 0

    def failing_on_the_third(*args: Any, **kwargs: Any) -> push_module.Attempted:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("a bug in the push")
        return real(*args, **kwargs)

    monkeypatch.setattr(push_module, "push", failing_on_the_third)
    admin.enqueue([upload(str(i)) for i in range(5)])
    with pytest.raises(urllib.error.HTTPError) as caught:
        admin.push(callback.url)
    assert caught.value.code == 500
    assert "failed unexpectedly" in json.loads(caught.value.read())["Error"]
    assert counts(admin) == (3, 0, 2)  # none left leased until its lease runs out
