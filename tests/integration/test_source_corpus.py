"""The bad-input corpus: malformed, broken, slow and hostile answers served byte for byte by a
raw HTTP stand-in (tests/standin.py) to the real `VodEventSource`. Each gives a `Batch` (bad
entries marked, good ones parsed) or a classified `SourceError` with a short one-line
message, within the request's deadline; never another exception."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr
from tencentcloud.common.credential import Credential

from tests.standin import Play, StandIn, answer, chunked, head, raw, stall, trickle
from vodpoller import rawjson
from vodpoller.config import VodSettings
from vodpoller.errors import (
    FatalSourceError,
    SourceError,
    TransientSourceError,
)
from vodpoller.source import Batch, VodEventSource

SLOW_DEADLINE = 1.0  # seconds, for the cases about slowness
DEADLINE = 10.0  # for the others (20 MB bodies on a busy machine)
MARGIN = 0.75  # how far past its deadline a call may end (thread wake-ups, parsing)


def source_for(stand_in: StandIn, seconds: float = DEADLINE) -> VodEventSource:
    vod = VodSettings(
        endpoint=stand_in.endpoint,
        scheme="http",
        secret_id=SecretStr("AKIDstandin"),
        secret_key=SecretStr("standin-key"),
    )
    credential = Credential("AKIDstandin", "standin-key")
    return VodEventSource(vod, credential, 0, request_timeout_seconds=seconds)


# -- what answers are made of -----------------------------------------------------------------


def entry(handle: Any = "h-1", **fields: Any) -> dict[str, Any]:
    body = {"EventHandle": handle, "EventType": "NewFileUpload"}
    body["FileUploadEvent"] = {"FileId": "5285890781763144364", **fields}
    return body


def envelope(*entries: Any, request_id: Any = "req-1") -> dict[str, Any]:
    return {"Response": {"EventSet": list(entries), "RequestId": request_id}}


def error(code: Any, message: Any = "something went wrong") -> dict[str, Any]:
    return {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "req-e"}}


GOOD = json.dumps(entry("h-good"))


def answer_text(*entry_texts: str, extra: str = "") -> str:
    """An answer whose entries are given as JSON text (for what json.dumps cannot write)."""
    return '{"Response":{' + extra + '"EventSet":[' + ",".join(entry_texts) + '],"RequestId":"r"}}'


def nested(levels: int, opener: str = "[", closer: str = "]", core: str = "") -> str:
    return opener * levels + core + closer * levels


# -- expectations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batched:
    """A batch: `handles` of every entry in order (None: no usable handle), and for the bad
    ones (by index) a phrase of their problem."""

    handles: tuple[str | None, ...]
    problems: dict[int, str] = field(default_factory=dict)
    request_id: str | None = "r"


@dataclass(frozen=True)
class Fails:
    kind: type[SourceError]
    code: str
    says: str
    status: int | None = None
    ambiguous: bool | None = None


@dataclass(frozen=True)
class Case:
    name: str
    play: Play
    expect: Batched | Fails
    seconds: float = DEADLINE


def check(expect: Batched | Fails, outcome: Batch | SourceError) -> None:
    if isinstance(expect, Fails):
        assert isinstance(outcome, expect.kind), outcome
        assert outcome.code == expect.code, outcome
        assert expect.says in str(outcome)
        if expect.status is not None:
            assert outcome.status == expect.status
        if expect.ambiguous is not None:
            assert outcome.ambiguous is expect.ambiguous
        return
    assert isinstance(outcome, Batch), outcome
    assert tuple(d.handle for d in outcome.deliveries) == expect.handles
    assert outcome.request_id == expect.request_id
    for index, delivery in enumerate(outcome.deliveries):
        if index in expect.problems:
            assert delivery.problem is not None, index
            assert expect.problems[index] in delivery.problem
            assert delivery.entry is None
        else:
            assert delivery.problem is None, delivery.problem
            assert isinstance(delivery.entry, dict)
            assert delivery.entry == rawjson.loads(delivery.text)


def short_and_on_one_line(error: SourceError) -> None:
    message = str(error)
    assert "\n" not in message
    assert len(message) <= 300
    assert message.startswith(("PullEvents failed: ", "ConfirmEvents failed: "))


UNREADABLE = "UnreadableAnswer"
NETWORK = "ClientNetworkError"
HTTP = "ServerNetworkError"


def unreadable(says: str, status: int = 200) -> Fails:
    return Fails(TransientSourceError, UNREADABLE, says, status, ambiguous=True)


def no_answer(says: str) -> Fails:
    return Fails(TransientSourceError, NETWORK, says, ambiguous=True)


def big(megabytes: int, handle: str = "h-big") -> Callable[[], bytes]:
    def make() -> bytes:
        text = json.dumps(envelope(entry(handle, Big="x" * (megabytes * 1024 * 1024))))
        return text.encode()

    return make


CHUNK_OF_ANSWER = json.dumps(envelope(entry("h-1"))).encode()
EMPTY = b'{"Response":{"EventSet":null,"RequestId":"r"}}'

PULL_CASES = [
    # -- bodies -------------------------------------------------------------------------------
    Case("not json", answer(b"hello, world"), unreadable("the answer is not JSON")),
    Case(
        "truncated json",
        answer(CHUNK_OF_ANSWER[: len(CHUNK_OF_ANSWER) // 2]),
        unreadable("unreadable answer"),
    ),
    Case("a list", answer([]), unreadable("the answer is a list, not a JSON object")),
    Case("a string", answer('"Response"'), unreadable("a string, not a JSON object")),
    Case("null", answer(b"null"), unreadable("the answer is null")),
    Case("empty body", answer(b""), unreadable("an empty body")),
    Case("no Response", answer({"RequestId": "r"}), unreadable("the answer has no Response")),
    Case("Response a string", answer({"Response": "ok"}), unreadable("Response is a string")),
    Case(
        "Error without Code",
        answer({"Response": {"Error": {"Message": "boom"}, "RequestId": "r"}}),
        unreadable("Response.Error without a Code"),
    ),
    Case("Error Code a number", answer(error(500)), unreadable("without a Code")),
    Case("Error a string", answer({"Response": {"Error": "boom"}}), unreadable("without a Code")),
    Case(
        "no RequestId",
        answer({"Response": {"EventSet": [entry("h-1")]}}),
        Batched(("h-1",), request_id=None),
    ),
    Case(
        "RequestId not fit to print",
        answer(envelope(entry("h-1"), request_id="line\nbreak" * 50)),
        Batched(("h-1",), request_id=None),
    ),
    Case(
        "EventSet a string",
        answer({"Response": {"EventSet": "[]"}}),
        unreadable("EventSet is a string, not a list"),
    ),
    Case(
        "EventSet a number",
        answer({"Response": {"EventSet": 16}}),
        unreadable("EventSet is a number"),
    ),
    Case(
        "EventSet an object",
        answer({"Response": {"EventSet": entry()}}),
        unreadable("EventSet is an object"),
    ),
    Case(
        "EventSet null",
        answer({"Response": {"EventSet": None, "RequestId": "r"}}),
        Batched(()),
    ),
    Case("no EventSet", answer({"Response": {"RequestId": "r"}}), Batched(())),
    Case(
        "entries that are not objects",
        answer(answer_text(GOOD, "5", '"h-2"', "null", "true", "[]")),
        Batched(
            ("h-good", None, None, None, None, None),
            {
                1: "a number, not an object",
                2: "a string, not an object",
                3: "null, not an object",
                4: "a boolean",
                5: "a list",
            },
        ),
    ),
    Case(
        "an entry nested 500 deep",
        answer(answer_text(GOOD, '{"EventHandle":"h-deep","Deep":' + nested(500) + "}")),
        Batched(("h-good", "h-deep"), {1: "nested more than 30 levels deep"}),
    ),
    Case(
        "an entry nested 200000 deep",
        answer(answer_text(GOOD, '{"EventHandle":"h-deep","Deep":' + nested(200_000) + "}")),
        Batched(("h-good", "h-deep"), {1: "nested more than 30 levels deep"}),
    ),
    Case(
        "an entry that is a list 5000 deep",
        answer(answer_text(nested(5000), GOOD)),
        Batched((None, "h-good"), {0: "nested more than 30 levels deep"}),
    ),
    Case(
        "another Response field nested 5000 deep",
        answer(answer_text(GOOD, extra='"Junk":' + nested(5000, '{"a":', "}", "1") + ",")),
        Batched(("h-good",)),
    ),
    Case(
        "1e400, 1e-400 and a precise decimal",
        answer(
            answer_text('{"EventHandle":"h-1","A":1e400,"B":-1e-400,"C":0.1000000000000000055511}')
        ),
        Batched(("h-1",)),
    ),
    Case(
        "huge integers",
        answer(answer_text('{"EventHandle":"h-1","A":' + "9" * 5000 + ',"B":' + "1" * 40 + "}")),
        Batched(("h-1",)),
    ),
    Case(
        "NaN and Infinity",
        answer(
            answer_text(
                '{"EventHandle":"h-nan","A":NaN}', GOOD, '{"EventHandle":"h-i","B":-Infinity}'
            )
        ),
        Batched(("h-nan", "h-good", "h-i"), {0: "not valid JSON", 2: "not valid JSON"}),
    ),
    Case(
        "escaped NUL and lone surrogates",
        answer(answer_text(r'{"EventHandle":"h-1","A":"nul \u0000 here","B":"cut \ud83d"}')),
        Batched(("h-1",)),
    ),
    Case(
        "a raw NUL byte in a string",
        answer(answer_text('{"EventHandle":"h-nul","A":"raw \x00 nul"}', GOOD)),
        Batched(("h-nul", "h-good"), {0: "not valid JSON: Invalid control character"}),
    ),
    Case(
        "invalid UTF-8 in an entry",
        answer(
            answer_text('{"EventHandle":"h-bytes","A":"', GOOD)
            .encode()
            .replace(b'"A":"', b'"A":"\xff\xfe\xc3"}')
        ),
        Batched(("h-bytes", "h-good"), {0: "not valid UTF-8"}),
    ),
    Case(
        "invalid UTF-8 in a handle",
        answer(b'{"Response":{"EventSet":[{"EventHandle":"h-\xe9t\xe9"},' + GOOD.encode() + b"]}}"),
        Batched((None, "h-good"), {0: "EventHandle is not valid UTF-8"}, request_id=None),
    ),
    Case(
        "a UTF-8 byte order mark",
        answer(b"\xef\xbb\xbf" + json.dumps(envelope(entry("h-1"), request_id="r")).encode()),
        Batched(("h-1",)),
    ),
    Case(
        "UTF-16",
        answer(json.dumps(envelope(entry("h-1"))).encode("utf-16")),
        unreadable("the answer is not JSON"),
    ),
    Case(
        "text after the answer",
        answer(json.dumps(envelope(entry("h-1"))) + " trailing"),
        unreadable("more text after the answer"),
    ),
    Case(
        "a 20 MB entry",
        answer(big(20)),
        Batched(("h-big",), request_id="req-1"),
    ),
    Case(
        "a 40 MB answer",
        answer(big(40)),
        unreadable("longer than 32 MB"),
    ),
    # -- the API's own errors -----------------------------------------------------------------
    Case(
        "InternalError",
        answer(error("InternalError")),
        Fails(
            TransientSourceError,
            "InternalError",
            "InternalError: something went wrong (RequestId req-e)",
            200,
            False,
        ),
    ),
    Case(
        "RequestLimitExceeded",
        answer(error("RequestLimitExceeded.UinLimitExceeded")),
        Fails(TransientSourceError, "RequestLimitExceeded.UinLimitExceeded", "UinLimit"),
    ),
    Case(
        "a wrong secret key",
        answer(
            error(
                "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
            )
        ),
        Fails(FatalSourceError, "AuthFailure.SignatureFailure", "could not be validated"),
    ),
    Case(
        "a 1 MB error message",
        answer(error("InternalError", "<html>" + "spam " * 200_000)),
        Fails(TransientSourceError, "InternalError", "InternalError: <html>spam spam"),
    ),
    Case(
        "ResourceNotFound is an empty pull",
        answer(error("ResourceNotFound", "no events")),
        Batched((), request_id="req-e"),
    ),
    Case(
        "ResourceNotFound.ServiceNotExist",
        answer(error("ResourceNotFound.ServiceNotExist")),
        Fails(FatalSourceError, "ResourceNotFound.ServiceNotExist", "ServiceNotExist"),
    ),
    # -- statuses -----------------------------------------------------------------------------
    *(
        Case(
            f"HTTP {status} empty",
            answer(b"", status, content_type=None),
            Fails(TransientSourceError, HTTP, f"HTTP {status} with an empty body", status, True),
        )
        for status in (500, 502, 503, 504)
    ),
    Case(
        "HTTP 502 gateway page",
        answer(
            "<html><head><title>502 Bad\n Gateway</title></head><body>" + "x" * 3000,
            502,
            content_type="text/html",
        ),
        Fails(TransientSourceError, HTTP, "HTTP 502 (text/html, 3 kB): 502 Bad Gateway", 502),
    ),
    Case(
        "HTTP 500 with 1 MB",
        answer(b"Internal Server Error\n" + b"trace " * 200_000, 500, content_type="text/plain"),
        Fails(
            TransientSourceError,
            HTTP,
            "HTTP 500 (text/plain, more than 64 kB): Internal Server Error",
            500,
        ),
    ),
    Case(
        "HTTP 500 with the API's error",
        answer(error("InternalError.DbError"), 500),
        Fails(
            TransientSourceError, "InternalError.DbError", "HTTP 500, InternalError.DbError", 500
        ),
    ),
    Case(
        "HTTP 200 with a web page",
        answer("<!doctype html><title>Captive portal</title>", content_type="text/html"),
        unreadable("HTTP 200 (text/html, 44 bytes): Captive portal"),
    ),
    Case(
        "HTTP 204",
        answer(b"", 204, content_type=None),
        Fails(TransientSourceError, HTTP, "HTTP 204 with an empty body", 204),
    ),
    Case(
        "HTTP 301 redirect",
        answer(b"", 301, headers={"Location": "https://elsewhere.example/"}, content_type=None),
        Fails(
            FatalSourceError,
            HTTP,
            "redirect to https://elsewhere.example/: check vod.endpoint",
            301,
            False,
        ),
    ),
    Case(
        "HTTP 403 from a proxy",
        answer("Forbidden", 403, content_type="text/plain"),
        Fails(FatalSourceError, HTTP, "HTTP 403 (text/plain, 9 bytes): Forbidden; refused", 403),
    ),
    Case(
        "HTTP 404",
        answer(b"", 404, content_type=None),
        Fails(FatalSourceError, HTTP, "not the VOD API", 404),
    ),
    Case(
        "HTTP 429",
        answer(b"slow down", 429, content_type="text/plain"),
        Fails(TransientSourceError, HTTP, "HTTP 429", 429),
    ),
    Case("not HTTP at all", raw(b"SSH-2.0-OpenSSH_9.6\r\n"), no_answer("not an HTTP answer")),
    Case(
        "a header line of 100 kB",
        raw(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 100_000 + b"\r\n\r\n"),
        no_answer("overlong"),
    ),
    Case(
        "200 headers",
        raw(head(200, {f"X-H{i}": "v" for i in range(200)})),
        no_answer("got more than 100 headers"),
    ),
    # -- framing and encodings ----------------------------------------------------------------
    Case(
        "false gzip",
        answer(envelope(entry()), headers={"Content-Encoding": "gzip"}),
        unreadable("Content-Encoding gzip, but its body is not gzip data"),
    ),
    Case(
        "true gzip",
        answer(envelope(entry("h-1"), request_id="r"), encoding="gzip"),
        Batched(("h-1",)),
    ),
    Case(
        "raw deflate",
        answer(
            zlib.compress(json.dumps(envelope(entry("h-1"), request_id="r")).encode())[2:-4],
            headers={"Content-Encoding": "deflate"},
        ),
        Batched(("h-1",)),
    ),
    Case(
        "a gzip bomb",
        answer(
            gzip.compress(b"[" + b" " * (64 * 1024 * 1024)), headers={"Content-Encoding": "gzip"}
        ),
        unreadable("longer than 32 MB"),
    ),
    Case(
        "brotli",
        answer(b"\x0b\x02\x80", headers={"Content-Encoding": "br"}),
        unreadable("Content-Encoding 'br', which vodpoller cannot read"),
    ),
    Case(
        "chunked, complete",
        chunked([CHUNK_OF_ANSWER[:10], CHUNK_OF_ANSWER[10:]]),
        Batched(("h-1",), request_id="req-1"),
    ),
    Case(
        "chunked, cut short",
        chunked([CHUNK_OF_ANSWER[:10]], end=b"40\r\nabc"),
        no_answer("the body ended early"),
    ),
    Case("chunk size not hex", chunked([], end=b"zz\r\n\r\n"), no_answer("the body ended early")),
    Case(
        "Content-Length beyond the body",
        raw(head(200, {"Content-Length": "5000"}) + CHUNK_OF_ANSWER),
        no_answer(f"connection closed after {len(CHUNK_OF_ANSWER)} of 5000 bytes"),
    ),
    Case("closed before the headers", raw(b""), no_answer("connection closed before an answer")),
    Case("closed inside the headers", raw(b"HTTP/1.1 200 OK\r\nContent-"), no_answer("")),
    # -- pace ---------------------------------------------------------------------------------
    Case(
        "a stall after the headers",
        stall(head(200, {"Content-Length": "100"}) + b'{"Response":'),
        Fails(TransientSourceError, NETWORK, "no complete answer within 1 s", None, True),
        SLOW_DEADLINE,
    ),
    Case(
        "no answer at all",
        stall(),
        Fails(TransientSourceError, NETWORK, "no complete answer within 1 s", None, True),
        SLOW_DEADLINE,
    ),
    Case(
        "a trickle",
        trickle(head(200, {"Content-Length": str(len(CHUNK_OF_ANSWER))}) + CHUNK_OF_ANSWER, 0.02),
        Fails(TransientSourceError, NETWORK, "no complete answer within 1 s", None, True),
        SLOW_DEADLINE,
    ),
    Case(
        "slow but in time",
        trickle(head(200, {"Content-Length": str(len(EMPTY))}) + EMPTY, 0.003),
        Batched(()),
        SLOW_DEADLINE,
    ),
    # -- handles ------------------------------------------------------------------------------
    Case(
        "handles that are not usable",
        answer(
            envelope(
                entry(""),
                entry(7),
                entry(None),
                entry({"h": 1}),
                {"EventType": "X"},
                entry("ok"),
                request_id="r",
            )
        ),
        Batched(
            (None, None, None, None, None, "ok"),
            {
                0: "EventHandle is empty",
                1: "EventHandle is a number, not a string",
                2: "EventHandle is null",
                3: "EventHandle is an object",
                4: "no EventHandle",
            },
        ),
    ),
]


@pytest.fixture(scope="module")
def corpus_timer() -> Iterator[list[float]]:
    spent: list[float] = []
    yield spent
    print(f"\nbad-input corpus: {len(spent)} answers in {sum(spent):.2f} s")


@pytest.mark.parametrize("case", PULL_CASES, ids=[case.name for case in PULL_CASES])
def test_every_bad_answer_to_a_pull_is_a_batch_or_a_classified_error_in_time(
    case: Case, corpus_timer: list[float]
) -> None:
    with StandIn([case.play]) as stand_in:
        source = source_for(stand_in, case.seconds)
        started = time.monotonic()
        try:
            outcome: Batch | SourceError = source.pull(None)
        except SourceError as failure:
            outcome = failure
            short_and_on_one_line(failure)
        finally:
            elapsed = time.monotonic() - started
            source.close()
    corpus_timer.append(elapsed)
    check(case.expect, outcome)
    assert elapsed < case.seconds + MARGIN
