"""The WSGI and ASGI middleware: the live path untouched, every mirror complete and counted.

Apps are tiny and module-level; WSGI environs and ASGI scope/receive/send are made by hand;
a URL candidate is a real ThreadingHTTPServer on 127.0.0.1 that records what it got.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import io
import itertools
import json
import socket
import threading
import warnings
import wsgiref.handlers
import zlib
from collections.abc import Iterator
from typing import Any

import fastapi
import flask
import pytest
from http_helpers import (
    AsgiClient,
    CandidateServer,
    Stream,
    body_messages,
    call_wsgi,
    http_scope,
    make_environ,
    read_body,
)
from starlette.exceptions import StarletteDeprecationWarning

import shadowdeco
from shadowdeco import sampling, sinks
from shadowdeco.middleware import (
    HttpResponse,
    ShadowASGIMiddleware,
    ShadowWSGIMiddleware,
    _http,
    compare_http,
)
from shadowdeco.middleware._http import DECODED_LIMIT as HTTP_DECODED_LIMIT

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 in its TestClient; the httpx we have works the same.
    warnings.filterwarnings("ignore", message=".*httpx2", category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

_names = itertools.count()


def wsgi(app: Any, candidate: Any, memory: sinks.Memory, **options: Any) -> ShadowWSGIMiddleware:
    """The WSGI middleware under a fresh experiment name (a test may wrap one app twice)."""
    options.setdefault("name", f"test-wsgi-{next(_names)}")
    return ShadowWSGIMiddleware(app, candidate, sinks=[memory], **options)


def asgi(app: Any, candidate: Any, memory: sinks.Memory, **options: Any) -> ShadowASGIMiddleware:
    """The ASGI middleware under a fresh experiment name."""
    options.setdefault("name", f"test-asgi-{next(_names)}")
    return ShadowASGIMiddleware(app, candidate, sinks=[memory], **options)


def counts(exp: shadowdeco.Experiment) -> tuple[int, int, int, dict[str, int], int]:
    """(sampled, skipped, emitted, dropped, in_flight), checking that they add up."""
    stats = exp.stats()
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()) + stats.in_flight
    return stats.sampled, stats.skipped, stats.emitted, dict(stats.dropped), stats.in_flight


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refused_url() -> str:
    """A base URL nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------------
# Tiny WSGI apps


class BodyError(Exception):
    pass


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Live", "1")])
    return [b"hello ", b"world"]


def generator_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(3):
        yield f"chunk {i}\n".encode()


def write_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    write = start_response("201 Created", [("Content-Type", "text/plain")])
    write(b"written, ")
    write(b"twice, ")
    return [b"returned"]


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Reads the body as X-Read asks and echoes it, with the method."""
    body = read_body(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [environ["REQUEST_METHOD"].encode() + b" ", body]


def json_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Server", "live/1.0"),
            ("X-Request-Id", "live-1"),
        ],
    )
    body = {"y": 1, "meta": {"request_id": "live-1"}, "items": [{"v": 1, "ts": "t-live"}]}
    return [json.dumps(body).encode()]


def json_candidate_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Date", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("Server", "candidate/2.0"),
            ("X-Request-Id", "cand-9"),
        ],
    )
    body = {"items": [{"ts": "t-cand", "v": 1}], "meta": {"request_id": "cand-9"}, "y": 1}
    return [json.dumps(body).encode()]


def raising_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise BodyError("candidate broke")


def error_500_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
    return [b"oops"]


class Recorder:
    """A WSGI app that records what it saw of each request, then answers ``reply``."""

    def __init__(self, reply: tuple[str, list[tuple[str, str]], bytes] | None = None) -> None:
        self.reply = reply or ("200 OK", [("Content-Type", "text/plain")], b"recorded")
        self.seen: list[dict[str, Any]] = []
        self.called = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.seen.append(
            {
                "environ": environ,
                "input": environ.get("wsgi.input"),
                "taken_before": getattr(environ.get("wsgi.input"), "taken", None),
                "body": read_body(environ),
                "in_shadow": shadowdeco.in_shadow(),
                "thread": threading.current_thread(),
            }
        )
        self.called.set()
        status, headers, body = self.reply
        start_response(status, headers)
        return [body]


class Hanging:
    """A WSGI candidate that blocks until released (always released by the test)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.entered.set()
        self.release.wait(10)
        start_response("200 OK", [])
        return [b"late"]


class ClosingBody:
    """An app iterable that records ``close()`` calls and may fail after its first chunk."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.closed = 0
        self.error = BodyError("broken mid-body")

    def __iter__(self) -> Iterator[bytes]:
        yield b"first"
        if self.fail:
            raise self.error
        yield b"second"

    def close(self) -> None:
        self.closed += 1


class ClosingApp:
    def __init__(self, body: ClosingBody) -> None:
        self.body = body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> ClosingBody:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self.body


class Producer:
    """A generator app that logs when it produces each chunk."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in (1, 2, 3):
            self.log.append(f"produced {i}")
            yield f"{i}".encode()


# --------------------------------------------------------------------------------------------
# WSGI: the live response


@pytest.mark.parametrize("sample", [1.0, 0.0])
@pytest.mark.parametrize(
    ("app", "method", "body"),
    [
        (hello_app, "GET", b""),
        (echo_app, "POST", b'{"x": 1}'),
        (generator_app, "GET", b""),
        (write_app, "GET", b""),
    ],
)
def test_wsgi_live_response_is_unchanged(
    app: Any, method: str, body: bytes, sample: float, memory: sinks.Memory
) -> None:
    """The client gets the same status, headers and chunks with the middleware as without."""
    bare = call_wsgi(app, make_environ(method, "/r", body=body))
    mw = wsgi(app, Recorder(), memory, sample=sample)
    wrapped = call_wsgi(mw, make_environ(method, "/r", body=body))
    assert (wrapped.status, wrapped.headers, wrapped.chunks) == (
        bare.status,
        bare.headers,
        bare.chunks,
    )
    assert mw.shadow.flush(10)
    assert len(memory) == (1 if sample else 0)
    if sample:
        assert memory.results[0].live.value.body_sha256 == sha(bare.body)


def _through_wsgiref(app: Any, environ: dict[str, Any]) -> bytes:
    """The bytes the standard library's WSGI handler writes for one call."""
    out = io.BytesIO()
    handler = wsgiref.handlers.SimpleHandler(
        Stream(b""), out, io.StringIO(), environ, multithread=True, multiprocess=False
    )
    handler.origin_server = False  # CGI-style status line: no Date header to differ
    handler.run(app)
    return out.getvalue()


@pytest.mark.parametrize("app", [generator_app, write_app])
def test_wsgi_bytes_through_wsgiref_are_identical(app: Any, memory: sinks.Memory) -> None:
    """Through wsgiref's handler, a mirrored response is byte-identical to a bare one."""
    mw = wsgi(app, Recorder(), memory)
    assert _through_wsgiref(mw, make_environ()) == _through_wsgiref(app, make_environ())
    assert mw.shadow.flush(10)
    assert len(memory) == 1


def test_wsgi_list_response_keeps_its_content_length_through_wsgiref(
    memory: sinks.Memory,
) -> None:
    """A one-chunk list response still gets the server's Content-Length when mirrored."""

    def one_chunk(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    mw = wsgi(one_chunk, Recorder(), memory)
    bare = _through_wsgiref(one_chunk, make_environ())
    assert b"Content-Length: 5" in bare
    assert _through_wsgiref(mw, make_environ()) == bare


@pytest.mark.parametrize("how", ["unsampled", "disabled", "method", "loop"])
def test_wsgi_unmirrored_request_gets_the_apps_own_iterable(how: str, memory: sinks.Memory) -> None:
    """A request that is not mirrored gets the app's very iterable and environ back."""
    body = ClosingBody()
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> ClosingBody:
        seen.append(environ)
        start_response("200 OK", [])
        return body

    options: dict[str, Any] = {"sample": 0.0} if how == "unsampled" else {}
    if how == "disabled":
        options["enabled"] = False
    mw = wsgi(app, Recorder(), memory, **options)
    environ = make_environ(
        "PUT" if how == "method" else "POST",
        body=b"payload",
        headers=[("X-Shadow-Request", "1")] if how == "loop" else [],
    )
    stream = environ["wsgi.input"]
    assert mw(environ, lambda *a: None) is body
    assert seen == [environ]
    assert environ["wsgi.input"] is stream
    assert stream.taken == 0


def test_wsgi_iterable_stays_lazy(memory: sinks.Memory) -> None:
    """Each chunk reaches the server before the app produces the next; the mirror waits."""
    log: list[str] = []
    candidate = Recorder()
    mw = wsgi(Producer(log), candidate, memory)
    result = mw(make_environ(), lambda *a: None)
    for chunk in result:
        log.append(f"received {chunk.decode()}")
        assert not candidate.called.is_set()  # nothing mirrored while the response streams
    result.close()
    assert log == [
        "produced 1",
        "received 1",
        "produced 2",
        "received 2",
        "produced 3",
        "received 3",
    ]
    assert mw.shadow.flush(10)
    assert memory.results[0].live.value.body_sha256 == sha(b"123")


@pytest.mark.parametrize("ending", ["complete", "raises", "client_stops"])
def test_wsgi_close_is_always_called(ending: str, memory: sinks.Memory) -> None:
    """The app's iterable is closed exactly once however the response ends; a response the
    client stopped reading is counted as incomplete_response, not mirrored."""
    body = ClosingBody(fail=ending == "raises")
    mw = wsgi(ClosingApp(body), Recorder(), memory)
    if ending == "raises":
        with pytest.raises(BodyError) as excinfo:
            call_wsgi(mw, make_environ())
        assert excinfo.value is body.error
    else:
        call = call_wsgi(mw, make_environ(), stop_after=1 if ending == "client_stops" else -1)
        assert call.chunks == ([b"first"] if ending == "client_stops" else [b"first", b"second"])
    assert body.closed == 1
    assert mw.shadow.flush(10)
    if ending == "client_stops":  # a partial live body would be a false mismatch: counted
        assert memory.results == []
        assert counts(mw.shadow) == (1, 0, 0, {"incomplete_response": 1}, 0)
        return
    (result,) = memory.results
    if ending == "raises":
        assert result.live.status == "error"
        assert result.live.error == ("test_middleware.BodyError", "broken mid-body")
    else:
        assert result.live.status == "ok"
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_wsgi_client_stopping_early_is_not_a_live_error(memory: sinks.Memory) -> None:
    """A client that stops reading early is not recorded as an error of the live app."""
    body = ClosingBody()
    mw = wsgi(ClosingApp(body), Recorder(), memory)
    call_wsgi(mw, make_environ(), stop_after=1)
    assert body.closed == 1
    assert mw.shadow.flush(10)
    assert [r.live.error for r in memory.results if r.live.error is not None] == []


def test_wsgi_app_raising_at_call_is_recorded_and_reraised(memory: sinks.Memory) -> None:
    """An app that raises before returning an iterable raises the very error, recorded live."""
    mw = wsgi(raising_app, Recorder(), memory)
    with pytest.raises(BodyError, match="candidate broke"):
        mw(make_environ(), lambda *a: None)
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert result.live.error == ("test_middleware.BodyError", "candidate broke")
    assert result.candidate.status == "ok"
    assert result.match is False


# --------------------------------------------------------------------------------------------
# WSGI: request bodies

BODY = b"".join(b"line %05d of the request body\n" % i for i in range(3000)) + b"no newline"


@pytest.mark.parametrize("how", ["read", "read-n", "readline"])
@pytest.mark.parametrize("chunked", [False, True])
def test_wsgi_live_and_candidate_read_the_same_body(
    how: str, chunked: bool, memory: sinks.Memory
) -> None:
    """Live and candidate read the very bytes sent, with Content-Length and chunked."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    environ = make_environ("POST", body=BODY, headers=[("X-Read", how)], chunked=chunked)
    call_wsgi(mw, environ)
    assert live.seen[0]["body"] == BODY
    assert mw.shadow.flush(10)
    assert candidate.seen[0]["body"] == BODY
    (result,) = memory.results
    assert result.inputs["args"][0]["body_sha256"] == sha(BODY)
    assert result.inputs["args"][0]["body_len"] == len(BODY)


@pytest.mark.parametrize("how", ["read", "read-n", "readline"])
@pytest.mark.parametrize("chunked", [False, True])
def test_wsgi_body_too_large_is_served_and_counted(
    how: str, chunked: bool, memory: sinks.Memory
) -> None:
    """A body past max_body is not mirrored, counted body_too_large; live reads every byte."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory, max_body=1000)
    environ = make_environ("POST", body=BODY, headers=[("X-Read", how)], chunked=chunked)
    stream = environ["wsgi.input"]
    call_wsgi(mw, environ)
    assert live.seen[0]["body"] == BODY
    if not chunked:  # the declared length is enough: the stream is not touched at all
        assert live.seen[0]["input"] is stream
        assert live.seen[0]["taken_before"] == 0
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"body_too_large": 1}, 0)
    assert len(memory) == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_wsgi_body_of_exactly_max_body_is_mirrored(chunked: bool, memory: sinks.Memory) -> None:
    """A body of exactly max_body bytes is mirrored whole."""
    candidate = Recorder()
    mw = wsgi(Recorder(), candidate, memory, max_body=len(BODY))
    call_wsgi(mw, make_environ("POST", body=BODY, chunked=chunked))
    assert mw.shadow.flush(10)
    assert candidate.seen[0]["body"] == BODY
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_wsgi_bad_content_length_reaches_live_untouched(length: str, memory: sinks.Memory) -> None:
    """A bad Content-Length is counted bad_request; live sees the original environ and stream."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    environ = make_environ("POST", body=b"payload", content_length=length)
    environ["HTTP_X_READ"] = "read-n"  # read(int(length)) would fail on the bad header itself
    stream = environ["wsgi.input"]
    before = dict(environ)
    call_wsgi(mw, environ)
    seen = live.seen[0]
    assert seen["environ"] is environ
    assert environ == before
    assert seen["input"] is stream
    assert seen["taken_before"] == 0
    assert seen["body"] == b"payload"
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"bad_request": 1}, 0)


def test_wsgi_short_body_is_counted_incomplete(memory: sinks.Memory) -> None:
    """Fewer bytes than Content-Length: counted incomplete_body, live reads what came."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    environ = make_environ("POST", body=b"only forty bytes" * 2 + b"12345678", content_length="100")
    call_wsgi(mw, environ)
    assert live.seen[0]["body"] == b"only forty bytes" * 2 + b"12345678"
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"incomplete_body": 1}, 0)


def test_wsgi_client_gone_mid_body_meets_live_as_without(memory: sinks.Memory) -> None:
    """A client gone mid-body is counted incomplete_body; live meets the same error."""

    def reader(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [])
        return [b""]

    def stream() -> Stream:
        return Stream(b"x" * 50, fail_after=10)

    with pytest.raises(OSError, match="client went away"):
        call_wsgi(reader, make_environ("POST", content_length="50", stream=stream()))
    candidate = Recorder()
    mw = wsgi(reader, candidate, memory)
    with pytest.raises(OSError, match="client went away"):
        call_wsgi(mw, make_environ("POST", content_length="50", stream=stream()))
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"incomplete_body": 1}, 0)


# --------------------------------------------------------------------------------------------
# WSGI: methods, loop protection, the in-process candidate


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_wsgi_safe_methods_are_mirrored_by_default(method: str, memory: sinks.Memory) -> None:
    """GET, HEAD and POST are mirrored by default."""
    candidate = Recorder()
    mw = wsgi(echo_app, candidate, memory)
    call_wsgi(mw, make_environ(method, body=b"b" if method == "POST" else b""))
    assert mw.shadow.flush(10)
    assert candidate.seen[0]["environ"]["REQUEST_METHOD"] == method
    assert memory.results[0].inputs["args"][0]["method"] == method


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_wsgi_unsafe_methods_are_not_mirrored_by_default(method: str, memory: sinks.Memory) -> None:
    """PUT, PATCH and DELETE are served live only and counted nowhere."""
    candidate = Recorder()
    mw = wsgi(echo_app, candidate, memory)
    call = call_wsgi(mw, make_environ(method, body=b"body"))
    assert call.body == method.encode() + b" body"
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (0, 0, 0, {}, 0)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_wsgi_listed_methods_are_mirrored(method: str, memory: sinks.Memory) -> None:
    """A method listed in methods= is mirrored, body included."""
    candidate = Recorder()
    mw = wsgi(echo_app, candidate, memory, methods=["get", method])
    call_wsgi(mw, make_environ(method, body=b"body"))
    assert mw.shadow.flush(10)
    assert candidate.seen[0]["environ"]["REQUEST_METHOD"] == method
    assert candidate.seen[0]["body"] == b"body"
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_wsgi_in_process_candidate_knows_it_is_a_shadow(memory: sinks.Memory) -> None:
    """The candidate sees X-Shadow-Request: 1 and in_shadow(); the live app sees neither."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    call_wsgi(mw, make_environ("GET", "/p", query="a=1", headers=[("X-Beta", "1")]))
    assert mw.shadow.flush(10)
    cand = candidate.seen[0]
    assert cand["environ"]["HTTP_X_SHADOW_REQUEST"] == "1"
    assert cand["in_shadow"] is True
    assert cand["thread"] is not threading.current_thread()
    assert (cand["environ"]["PATH_INFO"], cand["environ"]["QUERY_STRING"]) == ("/p", "a=1")
    assert cand["environ"]["HTTP_X_BETA"] == "1"
    assert "HTTP_X_SHADOW_REQUEST" not in live.seen[0]["environ"]
    assert live.seen[0]["in_shadow"] is False


def test_wsgi_candidate_sees_a_percent_in_the_path_unchanged(memory: sinks.Memory) -> None:
    """A path holding a literal percent sign reaches the candidate unchanged."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    call_wsgi(mw, make_environ("GET", "/files/a%2Fb"))  # the client sent /files/a%252Fb
    assert mw.shadow.flush(10)
    assert live.seen[0]["environ"]["PATH_INFO"] == "/files/a%2Fb"
    assert candidate.seen[0]["environ"]["PATH_INFO"] == "/files/a%2Fb"


def test_wsgi_request_marked_as_shadow_is_not_mirrored_again(memory: sinks.Memory) -> None:
    """A request that already carries X-Shadow-Request is served and not mirrored (no loops)."""
    live, candidate = Recorder(), Recorder()
    mw = wsgi(live, candidate, memory)
    call = call_wsgi(mw, make_environ("POST", body=b"x", headers=[("X-Shadow-Request", "1")]))
    assert call.body == b"recorded"
    assert live.seen[0]["body"] == b"x"
    assert mw.shadow.flush(10)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (0, 0, 0, {}, 0)


def test_wsgi_candidate_app_chain_does_not_loop(memory: sinks.Memory) -> None:
    """A candidate that is itself wrapped by the middleware does not mirror the mirror."""
    inner_candidate = Recorder()
    candidate = wsgi(Recorder(), inner_candidate, memory)
    mw = wsgi(hello_app, candidate, memory)
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    assert candidate.shadow.flush(10)
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)
    assert counts(candidate.shadow) == (0, 0, 0, {}, 0)
    assert not inner_candidate.called.is_set()


# --------------------------------------------------------------------------------------------
# WSGI: candidate failures


@pytest.mark.parametrize(
    ("candidate", "status", "match"),
    [
        (raising_app, "error", False),
        (error_500_app, "ok", False),
        (json_app, "ok", True),
    ],
)
def test_wsgi_candidate_outcome_never_changes_live(
    candidate: Any, status: str, match: bool, memory: sinks.Memory
) -> None:
    """Whatever the candidate does, live is unchanged and the result says what it did."""
    bare = call_wsgi(json_app, make_environ())
    mw = wsgi(json_app, candidate, memory)
    wrapped = call_wsgi(mw, make_environ())
    assert (wrapped.status, wrapped.headers, wrapped.chunks) == (
        bare.status,
        bare.headers,
        bare.chunks,
    )
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert (result.candidate.status, result.match) == (status, match)
    if candidate is raising_app:
        assert result.candidate.error == ("test_middleware.BodyError", "candidate broke")
        assert mw.shadow.stats().candidate_errors == 1
    if candidate is error_500_app:
        assert result.candidate.value.status == 500


def test_wsgi_hanging_candidate_times_out(memory: sinks.Memory) -> None:
    """A candidate hung past timeout is recorded as a timeout; live was already served."""
    candidate = Hanging()
    mw = wsgi(hello_app, candidate, memory, timeout=0.2)
    try:
        call = call_wsgi(mw, make_environ())
        assert call.body == b"hello world"
        (result,) = memory.wait(1, timeout=10)
        assert result.candidate.status == "timeout"
        assert result.match is None
        assert mw.shadow.stats().timeouts == 1
    finally:
        candidate.release.set()
    assert mw.shadow.flush(10)
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_wsgi_full_queue_drops_the_mirror(memory: sinks.Memory) -> None:
    """Past max_queue waiting mirrors a request is served live and counted queue_full."""
    candidate = Hanging()
    mw = wsgi(hello_app, candidate, memory, max_concurrency=1, max_queue=1)
    try:
        call_wsgi(mw, make_environ())
        assert candidate.entered.wait(10)  # the first mirror holds the only worker
        call_wsgi(mw, make_environ())  # waits in the queue
        call = call_wsgi(mw, make_environ())  # finds the queue full
        assert call.body == b"hello world"
        assert counts(mw.shadow)[3] == {"queue_full": 1}
    finally:
        candidate.release.set()
    assert mw.shadow.flush(10)
    assert counts(mw.shadow) == (3, 0, 2, {"queue_full": 1}, 0)


# --------------------------------------------------------------------------------------------
# WSGI: a candidate served elsewhere


def test_wsgi_url_candidate_gets_the_request(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """The URL candidate gets method, base path + path, query, body and X-Shadow-Request."""
    mw = wsgi(echo_app, candidate_server.url + "/v2/", memory)
    body = b'{"x": [1, 2, 3]}'
    environ = make_environ(
        "POST",
        "/predict",
        query="debug=1&a=%20b",
        body=body,
        headers=[("Content-Type", "application/json"), ("X-Beta", "1")],
    )
    assert call_wsgi(mw, environ).body == b"POST " + body
    assert mw.shadow.flush(10)
    (seen,) = candidate_server.seen
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "POST",
        "/v2/predict",
        "debug=1&a=%20b",
        body,
    )
    assert seen.header("x-shadow-request") == "1"
    assert seen.header("content-type") == "application/json"
    assert seen.header("x-beta") == "1"
    assert seen.header("content-length") == str(len(body))
    assert seen.header("host") == candidate_server.url.removeprefix("http://")
    (result,) = memory.results
    assert result.candidate.status == "ok"
    assert result.candidate.value.status == 200
    assert result.candidate.value.json() == {"ok": True}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_wsgi_url_candidate_answers_are_recorded(
    method: str, candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """A URL candidate's status, headers and body (none for HEAD) are recorded."""
    candidate_server.reply = (404, [("Content-Type", "text/plain"), ("X-V", "2")], b"missing")
    mw = wsgi(hello_app, candidate_server.url, memory)
    call_wsgi(mw, make_environ(method, "/gone"))
    assert mw.shadow.flush(10)
    assert candidate_server.seen[0].method == method
    cand = memory.results[0].candidate.value
    assert (cand.status, cand.header("x-v")) == (404, "2")
    assert cand.body_len == (0 if method == "HEAD" else len(b"missing"))
    assert memory.results[0].match is False


@pytest.mark.parametrize("forward", [False, True])
def test_wsgi_url_candidate_gets_credentials_only_when_allowed(
    forward: bool, candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """Authorization and Cookie reach a URL candidate only with forward_credentials=True."""
    mw = wsgi(hello_app, candidate_server.url, memory, forward_credentials=forward)
    headers = [("Authorization", "Bearer s3cret"), ("Cookie", "session=abc"), ("X-Ok", "1")]
    call_wsgi(mw, make_environ(headers=headers))
    assert mw.shadow.flush(10)
    (seen,) = candidate_server.seen
    assert seen.header("x-ok") == "1"
    if forward:
        assert seen.header("authorization") == "Bearer s3cret"
        assert seen.header("cookie") == "session=abc"
    else:
        assert not {"authorization", "cookie"} & seen.names
    recorded = json.dumps(memory.results[0].to_dict())
    assert "s3cret" not in recorded  # never recorded, forwarded or not
    assert "session=abc" not in recorded


def test_wsgi_url_candidate_gets_no_hop_by_hop_headers(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """Hop-by-hop headers of the live request are not forwarded to a URL candidate."""
    mw = wsgi(hello_app, candidate_server.url, memory)
    hop = [
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic cHJveHk="),
        ("Transfer-Encoding", "chunked"),
        ("Host", "live.example"),
    ]
    call_wsgi(mw, make_environ(headers=[*hop, ("X-End-To-End", "1")]))
    assert mw.shadow.flush(10)
    (seen,) = candidate_server.seen
    assert seen.header("x-end-to-end") == "1"
    hop_names = {"keep-alive", "te", "trailer", "upgrade", "proxy-authorization"}
    assert not (hop_names | {"transfer-encoding"}) & seen.names
    assert seen.header("connection") in {None, "keep-alive"}  # http.client's own, if any
    assert seen.header("host") != "live.example"
    recorded = {name for name, _ in memory.results[0].inputs["args"][0]["headers"]}
    assert "proxy-authorization" not in recorded  # a credential: never in a result either
    assert "x-end-to-end" in recorded


def test_wsgi_url_candidate_gets_no_connection_named_headers(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """Headers named in the Connection header are hop-by-hop and not forwarded."""
    mw = wsgi(hello_app, candidate_server.url, memory)
    headers = [("Connection", "close, X-Hop"), ("X-Hop", "secret-to-the-proxy")]
    call_wsgi(mw, make_environ(headers=headers))
    assert mw.shadow.flush(10)
    (seen,) = candidate_server.seen
    assert "x-hop" not in seen.names


def test_wsgi_url_candidate_keeps_its_connection_alive(
    candidate_server: CandidateServer, memory: sinks.Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mirrored requests reuse one kept-alive connection per worker."""
    monkeypatch.setattr(_http, "KEEPALIVE_IDLE", 3600.0)  # a stalled machine: no reconnect
    mw = wsgi(hello_app, candidate_server.url, memory, max_concurrency=1)
    for i in range(5):
        call_wsgi(mw, make_environ("GET", f"/r{i}"))
    assert mw.shadow.flush(10)
    assert [s.path for s in candidate_server.seen] == [f"/r{i}" for i in range(5)]
    assert candidate_server.connections == 1
    assert [r.candidate.status for r in memory.results] == ["ok"] * 5


def test_wsgi_url_candidate_does_not_reuse_a_connection_idle_for_keepalive_idle(
    candidate_server: CandidateServer, memory: sinks.Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle for ``KEEPALIVE_IDLE`` is replaced before a request (servers close
    idle ones without telling; a POST sent as one closes would be lost): here 0 s, so every
    mirror opens a new one, and every POST arrives once."""
    monkeypatch.setattr(_http, "KEEPALIVE_IDLE", 0.0)
    mw = wsgi(echo_app, candidate_server.url, memory, max_concurrency=1)
    for i in range(3):
        call_wsgi(mw, make_environ("POST", f"/r{i}", body=b"b%d" % i))
        assert mw.shadow.flush(10)
    assert [(s.path, s.body) for s in candidate_server.seen] == [
        (f"/r{i}", b"b%d" % i) for i in range(3)
    ]
    assert candidate_server.connections == 3
    assert [r.candidate.status for r in memory.results] == ["ok"] * 3


def test_wsgi_url_candidate_reconnects_after_the_server_closed(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """A kept-alive connection the server closed meanwhile is replaced, not an error."""
    candidate_server.close_each = True
    mw = wsgi(hello_app, candidate_server.url, memory, max_concurrency=1)
    for i in range(3):
        call_wsgi(mw, make_environ("GET", f"/r{i}"))
        assert mw.shadow.flush(10)
    assert [r.candidate.status for r in memory.results] == ["ok"] * 3
    assert [s.path for s in candidate_server.seen] == ["/r0", "/r1", "/r2"]
    assert candidate_server.connections == 3


def test_wsgi_url_candidate_never_sends_a_post_twice(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """A POST that meets a closed kept-alive connection is not sent again."""
    candidate_server.close_each = True
    mw = wsgi(echo_app, candidate_server.url, memory, max_concurrency=1)
    for i in range(4):
        call_wsgi(mw, make_environ("POST", f"/r{i}", body=b"b%d" % i))
        assert mw.shadow.flush(10)
    seen = [(s.path, s.body) for s in candidate_server.seen]
    assert len(seen) == len(set(seen))
    results = memory.results
    assert len(results) == 4
    assert {r.candidate.status for r in results} <= {"ok", "error"}
    assert results[0].candidate.status == "ok"
    assert sum(r.candidate.status == "ok" for r in results) == len(seen)


def test_wsgi_url_candidate_that_is_down_is_a_candidate_error(memory: sinks.Memory) -> None:
    """A URL candidate refusing connections is a candidate error; live is unchanged."""
    mw = wsgi(hello_app, refused_url(), memory)
    assert call_wsgi(mw, make_environ()).body == b"hello world"
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert result.candidate.status == "error"
    assert result.candidate.error is not None
    assert result.candidate.error[0] == "ConnectionRefusedError"
    assert result.match is False
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_closing_the_experiment_closes_url_connections(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """Closing the experiment closes the URL candidate's kept-alive connections."""
    mw = wsgi(hello_app, candidate_server.url, memory, max_concurrency=1)
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mw.shadow.close(5)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# --------------------------------------------------------------------------------------------
# WSGI: results


def test_wsgi_result_holds_the_request_and_both_responses(memory: sinks.Memory) -> None:
    """The result holds method, path, query, chosen headers, digests and both durations."""
    mw = wsgi(json_app, json_candidate_app, memory)
    body = b'{"x": 1}'
    environ = make_environ(
        "POST",
        "/predict",
        query="v=2",
        body=body,
        headers=[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer s3cret"),
            ("Cookie", "session=abc"),
            ("X-Beta", "1"),
        ],
    )
    call = call_wsgi(mw, environ)
    assert mw.shadow.flush(10)
    (result,) = memory.results
    request = result.inputs["args"][0]
    assert (request["method"], request["path"], request["query"]) == ("POST", "/predict", "v=2")
    headers = dict(request["headers"])
    assert headers["x-beta"] == "1"
    assert headers["content-type"] == "application/json"
    assert not {"authorization", "cookie"} & set(headers)
    assert (request["body_sha256"], request["body_len"]) == (sha(body), len(body))
    assert "body" not in request
    live, cand = result.live.value, result.candidate.value
    assert isinstance(live, HttpResponse)
    assert isinstance(cand, HttpResponse)
    assert (live.status, cand.status) == (200, 200)
    assert live.header("x-request-id") == "live-1"
    assert cand.header("X-Request-Id") == "cand-9"
    assert (live.body_sha256, live.body_len) == (sha(call.body), len(call.body))
    assert result.match is False  # the request ids in the bodies differ
    assert result.live.duration is not None
    assert result.live.duration >= 0
    assert result.candidate.duration is not None
    assert result.candidate.duration >= 0
    data = json.loads(json.dumps(result.to_dict()))
    assert data["live"]["value"]["status"] == 200
    assert data["candidate"]["value"]["body_sha256"] == cand.body_sha256
    assert "body" not in data["live"]["value"]
    assert "s3cret" not in json.dumps(data)
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)
    assert mw.shadow.stats().mismatched == 1


def test_wsgi_inputs_are_the_request_summary_met_once_by_the_serializer(
    memory: sinks.Memory,
) -> None:
    """The middleware records the request's summary, not the Request (which holds every
    header, credentials included): the serializer meets that summary once per record."""
    mw = wsgi(echo_app, hello_app, memory)
    headers = [("Authorization", "Bearer s3cret"), ("X-Beta", "1")]
    call_wsgi(mw, make_environ("POST", "/predict", query="v=2", body=b"b", headers=headers))
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert type(result.inputs["args"][0]) is dict  # JSON-ready, as to_dict() writes it
    request = dict(result.inputs["args"][0])
    headers = dict(request.pop("headers"))
    assert request == {
        "method": "POST",
        "path": "/predict",
        "query": "v=2",
        "body_sha256": sha(b"b"),
        "body_len": 1,
    }
    assert headers["x-beta"] == "1"
    assert "authorization" not in headers
    met: list[Any] = []

    def counting(value: Any) -> Any:
        met.append(value)
        return shadowdeco.to_jsonable(value)

    assert result.to_dict(counting)["inputs"] == result.to_dict()["inputs"] == result.inputs
    assert [m for m in met if isinstance(m, dict) and "args" in m] == [result.inputs]
    assert "s3cret" not in result.to_json(counting)


def test_wsgi_record_body_puts_bodies_in_the_result(memory: sinks.Memory) -> None:
    """With record_body=True the request and both response bodies are in the result."""
    mw = wsgi(echo_app, hello_app, memory, record_body=True)
    call_wsgi(mw, make_environ("POST", body=b"the body"))
    assert mw.shadow.flush(10)
    data = json.loads(json.dumps(memory.results[0].to_dict()))
    assert data["inputs"]["args"][0]["body"] == "the body"
    assert data["live"]["value"]["body"] == "POST the body"
    assert data["candidate"]["value"]["body"] == "hello world"
    assert data["live"]["value"]["body_truncated"] is False


def test_wsgi_response_capture_is_capped(memory: sinks.Memory) -> None:
    """Past max_response_body the digest covers the whole body, the kept bytes are capped."""
    mw = wsgi(echo_app, echo_app, memory, max_response_body=10, record_body=True)
    call_wsgi(mw, make_environ("POST", body=BODY))
    assert mw.shadow.flush(10)
    live = memory.results[0].live.value
    assert (live.body_len, live.body_sha256) == (len(BODY) + 5, sha(b"POST " + BODY))
    assert live.truncated is True
    assert live.body == (b"POST " + BODY)[:10]
    assert memory.results[0].match is True  # equal digests


def test_wsgi_chosen_headers_are_recorded(memory: sinks.Memory) -> None:
    """headers= chooses what results record; deny_headers= takes names away."""
    mw = wsgi(hello_app, hello_app, memory, headers=["x-beta", "x-gone"], deny_headers=["x-gone"])
    call_wsgi(mw, make_environ(headers=[("X-Beta", "1"), ("X-Gone", "1"), ("X-Other", "1")]))
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert result.inputs["args"][0]["headers"] == [["x-beta", "1"]]
    assert result.live.value.headers == ()


def test_wsgi_results_never_record_set_cookie(memory: sinks.Memory) -> None:
    """A response's Set-Cookie (a session credential) is never recorded."""

    def login(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Set-Cookie", "session=s3cret; HttpOnly")])
        return [b"ok"]

    mw = wsgi(login, login, memory)
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    assert "s3cret" not in json.dumps(memory.results[0].to_dict())


# --------------------------------------------------------------------------------------------
# compare_http


def response(status: int = 200, headers: Any = (), body: bytes = b"") -> HttpResponse:
    return HttpResponse(
        status,
        headers,
        body,
        body_len=len(body),
        body_sha256=sha(body),
        truncated=False,
        record_body=False,
    )


def test_compare_http_ignores_the_named_json_paths() -> None:
    """JSON bodies equal but for the ignored paths match; otherwise they do not."""
    live = response(body=b'{"y": 1, "meta": {"request_id": "a"}, "items": [{"v": 1, "ts": 1}]}')
    cand = response(body=b'{"items": [{"ts": 2, "v": 1}], "y": 1, "meta": {"request_id": "b"}}')
    assert compare_http(ignore=["meta.request_id", "items.*.ts"])(live, cand) is True
    assert compare_http(ignore=["meta.request_id"])(live, cand) is False
    assert compare_http()(live, cand) is False
    other = response(body=b'{"items": [{"ts": 2, "v": 9}], "y": 1, "meta": {"request_id": "b"}}')
    assert compare_http(ignore=["meta.request_id", "items.*.ts"])(live, other) is False


def test_compare_http_ignores_volatile_headers() -> None:
    """Date, Server and X-Request-Id differ without a mismatch, whatever their case."""
    live = response(headers=[("Date", "d1"), ("Server", "a"), ("X-Request-Id", "1")], body=b"x")
    cand = response(headers=[("date", "d2"), ("server", "b"), ("x-request-id", "2")], body=b"x")
    assert compare_http()(live, cand) is True


def test_compare_http_compares_other_headers() -> None:
    """A differing non-volatile header is a mismatch unless ignored or headers=False."""
    live = response(headers=[("Content-Type", "application/json")], body=b"{}")
    cand = response(headers=[("Content-Type", "text/plain")], body=b"{}")
    assert compare_http()(live, cand) is False
    assert compare_http(ignore_headers=["Content-Type"])(live, cand) is True
    assert compare_http(headers=False)(live, cand) is True


def test_compare_http_compares_status() -> None:
    """A different status is a mismatch even with equal bodies."""
    assert compare_http()(response(200, body=b"x"), response(201, body=b"x")) is False


def test_compare_http_compares_other_bodies_by_digest() -> None:
    """Bodies that are not JSON match only when their bytes are equal."""
    assert compare_http()(response(body=b"<p>a</p>"), response(body=b"<p>a</p>")) is True
    assert compare_http()(response(body=b"<p>a</p>"), response(body=b"<p>b</p>")) is False


def test_wsgi_compare_http_through_the_middleware(memory: sinks.Memory) -> None:
    """Responses differing only in ignored paths and volatile headers are recorded as matching."""
    mw = wsgi(
        json_app,
        json_candidate_app,
        memory,
        compare=compare_http(ignore=["meta.request_id", "items.*.ts"]),
    )
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    assert memory.results[0].match is True
    assert mw.shadow.stats().matched == 1


# --------------------------------------------------------------------------------------------
# Sampling predicates on the request


@pytest.mark.parametrize(
    ("sample", "mirrored"),
    [
        (sampling.path("/predict"), ["/predict/a"]),
        (sampling.header("x-beta", "1"), ["/beta"]),
        (lambda request: request.method == "POST", ["/post"]),
    ],
)
def test_wsgi_sampling_looks_at_the_request(
    sample: Any, mirrored: list[str], memory: sinks.Memory
) -> None:
    """A sampler sees the request: its path, headers and method."""
    mw = wsgi(echo_app, hello_app, memory, sample=sample)
    call_wsgi(mw, make_environ("GET", "/predict/a"))
    call_wsgi(mw, make_environ("GET", "/beta", headers=[("X-Beta", "1")]))
    call_wsgi(mw, make_environ("GET", "/beta-no", headers=[("X-Beta", "0")]))
    call_wsgi(mw, make_environ("POST", "/post", body=b"b"))
    call_wsgi(mw, make_environ("GET", "/other"))
    assert mw.shadow.flush(10)
    assert [r.inputs["args"][0]["path"] for r in memory.results] == mirrored
    assert counts(mw.shadow) == (1, 4, 1, {}, 0)


# --------------------------------------------------------------------------------------------
# Bad options

BAD_OPTIONS = [
    ({"methods": "GET"}, TypeError, "methods"),
    ({"methods": []}, ValueError, "methods"),
    ({"methods": ["GET", "NOT A METHOD"]}, ValueError, "methods"),
    ({"max_body": -1}, ValueError, "max_body"),
    ({"max_body": 1.5}, ValueError, "max_body"),
    ({"max_response_body": -1}, ValueError, "max_response_body"),
    ({"record_body": "yes"}, TypeError, "record_body"),
    ({"forward_credentials": 1}, TypeError, "forward_credentials"),
    ({"headers": "x-beta"}, TypeError, "headers"),
    ({"deny_headers": ["ok", ""]}, ValueError, "deny_headers"),
    ({"candidate": 42}, TypeError, "candidate"),
    ({"candidate": "ftp://127.0.0.1/"}, ValueError, "candidate"),
    ({"candidate": "http:///no-host"}, ValueError, "candidate"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"max_concurrency": 0}, ValueError, "max_concurrency"),
    ({"sample": 2}, ValueError, "sample"),
    ({"sinks": "memory"}, TypeError, "sinks"),
]


@pytest.mark.parametrize("cls", [ShadowWSGIMiddleware, ShadowASGIMiddleware])
@pytest.mark.parametrize(("options", "error", "param"), BAD_OPTIONS)
def test_bad_options_fail_at_construction(
    cls: Any, options: dict[str, Any], error: type[Exception], param: str
) -> None:
    """A bad option fails at construction with a message naming the parameter."""
    options = {"candidate": hello_app, **options}
    with pytest.raises(error, match=rf"\b{param}\b"):
        cls(hello_app, **options)


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_asgi_bad_drain_timeout_fails_at_construction(value: Any, error: type[Exception]) -> None:
    """A bad drain_timeout fails at construction, naming it."""
    with pytest.raises(error, match=r"\bdrain_timeout\b"):
        ShadowASGIMiddleware(asgi_hello, asgi_hello, drain_timeout=value)


def test_app_that_is_not_callable_fails_at_construction() -> None:
    """An app that is not callable fails at construction, naming app."""
    with pytest.raises(TypeError, match=r"\bapp\b"):
        ShadowWSGIMiddleware(42, hello_app)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Tiny ASGI apps

Scope = dict[str, Any]


async def asgi_hello(scope: Scope, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-live", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def asgi_raising(scope: Scope, receive: Any, send: Any) -> None:
    raise BodyError("candidate broke")


class AsgiRecorder:
    """Reads the body (keeping every message, and the disconnect when ``until_disconnect``),
    records what it saw, then answers with its method and the body."""

    def __init__(self, *, until_disconnect: bool = False, status: int = 200) -> None:
        self.until_disconnect = until_disconnect
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.called = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.calls.append(
            {
                "scope": scope,
                "receive": receive,
                "send": send,
                "in_shadow": shadowdeco.in_shadow(),
                "loop": asyncio.get_running_loop(),
                "task": asyncio.current_task(),
                "headers": dict(scope.get("headers", [])),
            }
        )
        body = b""
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                if self.until_disconnect:
                    self.received.append(await receive())
                break
        self.called.set()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        method = scope["method"].encode()
        await send({"type": "http.response.body", "body": method + b" ", "more_body": True})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class AsgiStreamer:
    """Streams ``n`` chunks; chunk i (i > 0) waits for ``go[i]``, which the test sets."""

    def __init__(self, n: int) -> None:
        self.go = [asyncio.Event() for _ in range(n)]
        self.produced: list[int] = []
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]}
        self.sent.append(start)
        await send(start)
        for i, event in enumerate(self.go):
            if i:
                await event.wait()
            self.produced.append(i)
            message = {
                "type": "http.response.body",
                "body": f"data: {i}\n\n".encode(),
                "more_body": i < len(self.go) - 1,
            }
            self.sent.append(message)
            await send(message)


class AsgiBlocking:
    """An ASGI candidate that waits for ``release`` (set by the test) before answering."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no lifespan of its own
            return
        self.entered.set()
        await self.release.wait()
        self.log.append("candidate finished")
        await asgi_hello(scope, receive, send)


class LifespanApp:
    """Handles lifespan startup and shutdown, calling ``on_shutdown`` when told to stop;
    says hello to HTTP requests."""

    def __init__(self, on_shutdown: Any) -> None:
        self.on_shutdown = on_shutdown
        self.started = asyncio.Event()
        self.received: list[dict[str, Any]] = []
        self.args: tuple[Any, ...] = ()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asgi_hello(scope, receive, send)
            return
        self.args = (scope, receive, send)
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


# --------------------------------------------------------------------------------------------
# ASGI: the live path


@pytest.mark.parametrize("sample", [1.0, 0.0])
def test_asgi_messages_are_forwarded_at_once_and_unchanged(
    sample: float, memory: sinks.Memory
) -> None:
    """Each message reaches the client before the app produces the next, unchanged, in order."""
    app = AsgiStreamer(4)
    candidate = AsgiRecorder()
    mw = asgi(app, candidate, memory, sample=sample)
    client = AsgiClient(body_messages(b""))
    arrived = [asyncio.Event() for _ in range(5)]
    client.on_send = lambda message: arrived[len(client.sent) - 1].set()

    async def main() -> None:
        task = asyncio.create_task(mw(http_scope(), client.receive, client.send))
        for i in range(4):
            await asyncio.wait_for(arrived[i + 1].wait(), 10)
            assert app.produced == list(range(i + 1))  # chunk i is out, i + 1 not yet made
            if i < 3:
                assert not candidate.called.is_set()  # the mirror waits for the whole response
                app.go[i + 1].set()
        await asyncio.wait_for(task, 10)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert len(client.sent) == len(app.sent)
    assert all(got is made for got, made in zip(client.sent, app.sent, strict=True))
    assert len(memory) == (1 if sample else 0)
    if sample:
        assert memory.results[0].live.value.body_sha256 == sha(client.body)


@pytest.mark.parametrize("sample", [1.0, 0.0])
def test_asgi_receive_is_replayed_exactly(sample: float, memory: sinks.Memory) -> None:
    """The app receives the very messages the server sent, then http.disconnect passes through."""
    app, candidate = AsgiRecorder(until_disconnect=True), AsgiRecorder()
    mw = asgi(app, candidate, memory, sample=sample)
    incoming = [*body_messages(b"abc", b"", b"def"), {"type": "http.disconnect"}]
    client = AsgiClient(incoming)

    async def main() -> None:
        await mw(http_scope("POST"), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert len(app.received) == len(incoming)
    assert all(got is sent for got, sent in zip(app.received, incoming, strict=True))
    assert client.body == b"POST abcdef"
    if sample:
        assert candidate.received[0]["body"] == b"abcdef"
        assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_asgi_unmirrored_request_gets_the_servers_own_callables(memory: sinks.Memory) -> None:
    """A request that is not mirrored reaches the app with the very scope, receive and send."""
    app = AsgiRecorder()
    mw = asgi(app, AsgiRecorder(), memory, sample=0.0)
    client = AsgiClient(body_messages(b"x"))
    scope = http_scope("POST")
    asyncio.run(mw(scope, client.receive, client.send))
    call = app.calls[0]
    assert (call["scope"], call["receive"], call["send"]) == (scope, client.receive, client.send)
    assert call["scope"] is scope
    assert counts(mw.shadow) == (0, 1, 0, {}, 0)


def test_asgi_app_error_is_reraised_and_recorded(memory: sinks.Memory) -> None:
    """An app that raises raises the very error; the result records it as live's."""
    mw = asgi(asgi_raising, asgi_hello, memory)
    client = AsgiClient(body_messages(b""))

    async def main() -> None:
        with pytest.raises(BodyError, match="candidate broke"):
            await mw(http_scope(), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    (result,) = memory.results
    assert result.live.error == ("test_middleware.BodyError", "candidate broke")
    assert result.candidate.status == "ok"


# --------------------------------------------------------------------------------------------
# ASGI: lifespan and websocket


def test_asgi_lifespan_passes_through_and_shutdown_drains(memory: sinks.Memory) -> None:
    """lifespan messages pass through; shutdown reaches the app only once mirrors drained."""
    log: list[str] = []
    candidate = AsgiBlocking(log)
    seen_at_shutdown: list[Any] = []

    def on_shutdown() -> None:
        log.append("app shutdown")
        seen_at_shutdown.append((mw.shadow.stats().in_flight, len(memory)))

    app = LifespanApp(on_shutdown)
    mw = asgi(app, candidate, memory)
    lifespan_sent: list[dict[str, Any]] = []
    startup = {"type": "lifespan.startup"}
    shutdown = {"type": "lifespan.shutdown"}

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        pulled = asyncio.Event()

        async def receive() -> dict[str, Any]:
            message = await inbox.get()
            if message is shutdown:
                pulled.set()
            return message

        async def send(message: dict[str, Any]) -> None:
            lifespan_sent.append(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        lifespan = asyncio.create_task(mw(scope, receive, send))
        inbox.put_nowait(startup)
        await asyncio.wait_for(app.started.wait(), 10)
        assert app.args[0] is scope
        assert app.args[2] is send
        client = AsgiClient(body_messages(b"x"))
        await mw(http_scope("POST"), client.receive, client.send)
        await asyncio.wait_for(candidate.entered.wait(), 10)
        inbox.put_nowait(shutdown)
        await asyncio.wait_for(pulled.wait(), 10)
        log.append("released")
        candidate.release.set()
        await asyncio.wait_for(lifespan, 20)

    asyncio.run(main())
    assert app.received == [startup, shutdown]
    assert app.received[1] is shutdown
    assert lifespan_sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert log == ["released", "candidate finished", "app shutdown"]
    assert seen_at_shutdown == [(0, 1)]
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_asgi_websocket_passes_straight_through(memory: sinks.Memory) -> None:
    """A websocket scope reaches the app with the very scope, receive and send, unmirrored."""
    seen: list[Any] = []

    async def ws_app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"].upper()})
        assert (await receive())["type"] == "websocket.disconnect"

    candidate = AsgiRecorder()
    mw = asgi(ws_app, candidate, memory)
    client = AsgiClient(
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.disconnect", "code": 1000},
        ]
    )
    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    asyncio.run(mw(scope, client.receive, client.send))
    assert seen == [(scope, client.receive, client.send)]
    assert seen[0][0] is scope
    assert client.sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "HI"},
    ]
    assert counts(mw.shadow) == (0, 0, 0, {}, 0)
    assert not candidate.called.is_set()


# --------------------------------------------------------------------------------------------
# ASGI: candidates


def test_asgi_candidate_runs_as_a_task_on_the_same_loop(memory: sinks.Memory) -> None:
    """The in-process candidate runs as its own task on the server's loop, marked as shadow."""
    live, candidate = AsgiRecorder(), AsgiRecorder()
    mw = asgi(live, candidate, memory)
    client = AsgiClient(body_messages(b"abc"))
    loops: list[Any] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        await mw(http_scope("POST", "/p", b"q=1", [("X-Beta", "1")]), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    cand = candidate.calls[0]
    assert cand["loop"] is loops[0]
    assert cand["task"] is not live.calls[0]["task"]
    assert cand["in_shadow"] is True
    assert cand["headers"][b"x-shadow-request"] == b"1"
    assert cand["headers"][b"x-beta"] == b"1"
    assert (cand["scope"]["path"], cand["scope"]["query_string"]) == ("/p", b"q=1")
    assert live.calls[0]["in_shadow"] is False
    assert b"x-shadow-request" not in live.calls[0]["headers"]
    (result,) = memory.results
    assert result.match is True
    assert client.body == b"POST abc"


def test_asgi_request_marked_as_shadow_is_not_mirrored_again(memory: sinks.Memory) -> None:
    """An ASGI request that already carries x-shadow-request is served and not mirrored."""
    live, candidate = AsgiRecorder(), AsgiRecorder()
    mw = asgi(live, candidate, memory)
    client = AsgiClient(body_messages(b"x"))
    scope = http_scope("POST", headers=[("X-Shadow-Request", "1")])
    asyncio.run(mw(scope, client.receive, client.send))
    assert live.calls[0]["receive"] == client.receive
    assert counts(mw.shadow) == (0, 0, 0, {}, 0)
    assert not candidate.called.is_set()


@pytest.mark.parametrize(
    ("candidate", "status", "match"),
    [(asgi_raising, "error", False), (AsgiRecorder(status=500), "ok", False)],
)
def test_asgi_candidate_failure_never_changes_live(
    candidate: Any, status: str, match: bool, memory: sinks.Memory
) -> None:
    """A candidate that raises or answers 500 leaves live unchanged and is recorded."""
    mw = asgi(AsgiRecorder(), candidate, memory)
    client = AsgiClient(body_messages(b"x"))

    async def main() -> None:
        await mw(http_scope("POST"), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert (client.status, client.body) == (200, b"POST x")
    (result,) = memory.results
    assert (result.candidate.status, result.match) == (status, match)


def test_asgi_hanging_candidate_times_out(memory: sinks.Memory) -> None:
    """An async candidate hung past timeout is recorded as a timeout and cancelled."""
    log: list[str] = []
    candidate = AsgiBlocking(log)  # never released: the timeout cancels it
    mw = asgi(asgi_hello, candidate, memory, timeout=0.2)
    client = AsgiClient(body_messages(b""))

    async def main() -> None:
        await mw(http_scope(), client.receive, client.send)
        assert client.body == b"hello"
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    (result,) = memory.results
    assert (result.candidate.status, result.match) == ("timeout", None)
    assert log == []
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)


def test_asgi_url_candidate_runs_off_the_loop(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """A URL candidate runs in a worker thread: the loop serves on while it is in flight."""
    live = AsgiRecorder()
    mw = asgi(live, candidate_server.url, memory)

    async def main() -> None:
        first = AsgiClient(body_messages(b"mirror me"))
        await mw(http_scope("POST", "/hang", b"x=1"), first.receive, first.send)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, candidate_server.wait_for, 1)
        # The mirror is held by the candidate server; live requests are served meanwhile.
        second = AsgiClient(body_messages(b"second"))
        await mw(http_scope("POST", "/other"), second.receive, second.send)
        assert second.body == b"POST second"
        assert mw.shadow.stats().in_flight >= 1
        candidate_server.gate.set()
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    seen = candidate_server.seen
    assert [(s.method, s.path, s.query, s.body) for s in seen] == [
        ("POST", "/hang", "x=1", b"mirror me"),
        ("POST", "/other", "", b"second"),
    ]
    assert all(s.header("x-shadow-request") == "1" for s in seen)
    assert [r.candidate.status for r in memory.results] == ["ok", "ok"]
    assert counts(mw.shadow) == (2, 0, 2, {}, 0)


def test_asgi_url_candidate_gets_credentials_only_when_allowed(
    candidate_server: CandidateServer, memory: sinks.Memory
) -> None:
    """From ASGI too, Authorization and Cookie are not forwarded by default."""
    mw = asgi(asgi_hello, candidate_server.url, memory)
    client = AsgiClient(body_messages(b""))
    headers = [("Authorization", "Bearer s3cret"), ("Cookie", "a=b"), ("X-Ok", "1")]

    async def main() -> None:
        await mw(http_scope(headers=headers), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    (seen,) = candidate_server.seen
    assert seen.header("x-ok") == "1"
    assert not {"authorization", "cookie"} & seen.names


# --------------------------------------------------------------------------------------------
# ASGI: request bodies


def test_asgi_body_too_large_by_content_length_is_not_read(memory: sinks.Memory) -> None:
    """A declared length past max_body: not mirrored, counted, and the app gets receive itself."""
    app, candidate = AsgiRecorder(), AsgiRecorder()
    mw = asgi(app, candidate, memory, max_body=10)
    incoming = body_messages(b"x" * 8, b"y" * 8, b"z" * 8)
    client = AsgiClient(incoming)
    scope = http_scope("POST", headers=[("Content-Length", "24")])

    async def main() -> None:
        await mw(scope, client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert app.calls[0]["receive"] == client.receive
    assert all(got is sent for got, sent in zip(app.received, incoming, strict=True))
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"body_too_large": 1}, 0)


def test_asgi_streamed_body_too_large_is_replayed(memory: sinks.Memory) -> None:
    """A streamed body past max_body is not mirrored; the app gets every message as sent."""
    app, candidate = AsgiRecorder(until_disconnect=True), AsgiRecorder()
    mw = asgi(app, candidate, memory, max_body=20)
    chunks = [bytes([65 + i]) * 8 for i in range(5)]  # AAAAAAAA, BBBBBBBB, ...
    incoming = [*body_messages(*chunks), {"type": "http.disconnect"}]
    client = AsgiClient(incoming)

    async def main() -> None:
        await mw(http_scope("POST"), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert all(got is sent for got, sent in zip(app.received, incoming, strict=True))
    assert client.body == b"POST " + b"".join(chunks)
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"body_too_large": 1}, 0)


def test_asgi_disconnect_mid_body_is_counted_incomplete(memory: sinks.Memory) -> None:
    """A client gone mid-body is not mirrored, counted incomplete_body; the app sees the same."""
    app, candidate = AsgiRecorder(), AsgiRecorder()
    mw = asgi(app, candidate, memory)
    incoming = [
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.disconnect"},
    ]
    client = AsgiClient(incoming)

    async def main() -> None:
        await mw(http_scope("POST"), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert all(got is sent for got, sent in zip(app.received, incoming, strict=True))
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"incomplete_body": 1}, 0)


@pytest.mark.parametrize(
    "length",
    [
        "abc",
        "-1",
    ],
)
def test_asgi_bad_content_length_reaches_live_untouched(length: str, memory: sinks.Memory) -> None:
    """A bad Content-Length is counted bad_request; the app gets the server's receive."""
    app, candidate = AsgiRecorder(), AsgiRecorder()
    mw = asgi(app, candidate, memory)
    client = AsgiClient(body_messages(b"x"))
    scope = http_scope("POST", headers=[("Content-Length", length)])

    async def main() -> None:
        await mw(scope, client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert app.calls[0]["receive"] == client.receive
    assert not candidate.called.is_set()
    assert counts(mw.shadow) == (1, 0, 0, {"bad_request": 1}, 0)


@pytest.mark.parametrize(
    ("method", "options", "mirrored"),
    [
        ("GET", {}, True),
        ("HEAD", {}, True),
        ("POST", {}, True),
        ("PUT", {}, False),
        ("PATCH", {}, False),
        ("DELETE", {}, False),
        ("DELETE", {"methods": ["DELETE"]}, True),
        ("GET", {"methods": ["DELETE"]}, False),
    ],
)
def test_asgi_methods(
    method: str, options: dict[str, Any], mirrored: bool, memory: sinks.Memory
) -> None:
    """GET, HEAD, POST are mirrored by default; others only when listed in methods=."""
    candidate = AsgiRecorder()
    mw = asgi(AsgiRecorder(), candidate, memory, **options)
    client = AsgiClient(body_messages(b"b"))

    async def main() -> None:
        await mw(http_scope(method), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert client.body == method.encode() + b" b"
    if mirrored:
        assert candidate.calls[0]["scope"]["method"] == method
        assert counts(mw.shadow) == (1, 0, 1, {}, 0)
    else:
        assert not candidate.calls
        assert counts(mw.shadow) == (0, 0, 0, {}, 0)


def test_asgi_result_holds_the_request_and_both_responses(memory: sinks.Memory) -> None:
    """The ASGI result holds method, path, query, chosen headers, digests and durations."""
    mw = asgi(AsgiRecorder(), AsgiRecorder(status=201), memory)
    client = AsgiClient(body_messages(b'{"x"', b": 1}"))
    headers = [("Content-Type", "application/json"), ("Cookie", "a=b"), ("X-Beta", "1")]

    async def main() -> None:
        await mw(http_scope("POST", "/predict", b"v=2", headers), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    (result,) = memory.results
    request = result.inputs["args"][0]
    assert (request["method"], request["path"], request["query"]) == ("POST", "/predict", "v=2")
    assert dict(request["headers"]) == {"content-type": "application/json", "x-beta": "1"}
    assert (request["body_sha256"], request["body_len"]) == (sha(b'{"x": 1}'), 8)
    assert "body" not in request
    live, cand = result.live.value, result.candidate.value
    assert isinstance(live, HttpResponse)
    assert isinstance(cand, HttpResponse)
    assert (live.status, cand.status) == (200, 201)
    assert live.body_sha256 == sha(client.body) == cand.body_sha256
    assert live.header("content-type") == "application/octet-stream"
    assert result.match is False  # the status differs
    assert result.live.duration is not None
    assert result.candidate.duration is not None
    json.dumps(result.to_dict())
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)
    assert mw.shadow.stats().mismatched == 1


def test_asgi_sampling_looks_at_the_request(memory: sinks.Memory) -> None:
    """An ASGI sampler sees the request's path and headers."""
    mw = asgi(
        AsgiRecorder(),
        AsgiRecorder(),
        memory,
        sample=sampling.path("/predict") | sampling.header("x-beta", "1"),
    )

    async def main() -> None:
        for path, headers in [("/predict", []), ("/beta", [("X-Beta", "1")]), ("/no", [])]:
            client = AsgiClient(body_messages(b""))
            await mw(http_scope("GET", path, headers=headers), client.receive, client.send)
        assert await mw.shadow.aflush(10)

    asyncio.run(main())
    assert [r.inputs["args"][0]["path"] for r in memory.results] == ["/predict", "/beta"]
    assert counts(mw.shadow) == (2, 1, 2, {}, 0)


# --------------------------------------------------------------------------------------------
# Frameworks end to end: Flask (WSGI) and FastAPI (ASGI), in process

flask_live = flask.Flask("flask_live")
flask_candidate = flask.Flask("flask_candidate")


@flask_live.post("/predict")
def flask_predict() -> dict[str, Any]:
    return {"y": flask.request.get_json()["x"] * 2, "shadow": shadowdeco.in_shadow()}


@flask_candidate.post("/predict")
def flask_predict_v2() -> dict[str, Any]:
    return {
        "y": flask.request.get_json()["x"] * 2,
        "shadow": shadowdeco.in_shadow(),
        "header": flask.request.headers.get("X-Shadow-Request"),
    }


def test_flask_app_through_its_test_client(
    memory: sinks.Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Flask app wrapped in the middleware serves live and mirrors to a Flask candidate."""
    mw = wsgi(
        flask_live.wsgi_app,
        flask_candidate,
        memory,
        compare=compare_http(ignore=["shadow", "header"]),
    )
    monkeypatch.setattr(flask_live, "wsgi_app", mw)
    # buffered=True: only then does Werkzeug's test client close() the response (PEP 3333).
    response = flask_live.test_client().post("/predict", json={"x": 21}, buffered=True)
    assert (response.status_code, response.get_json()) == (200, {"y": 42, "shadow": False})
    assert mw.shadow.flush(10)
    (result,) = memory.results
    assert result.candidate.value.json() == {"y": 42, "shadow": True, "header": "1"}
    assert result.match is True


fastapi_live = fastapi.FastAPI()
fastapi_candidate = fastapi.FastAPI()


@fastapi_live.post("/predict")
async def fastapi_predict(payload: dict[str, int]) -> dict[str, Any]:
    return {"y": payload["x"] * 2, "shadow": shadowdeco.in_shadow()}


@fastapi_candidate.post("/predict")
async def fastapi_predict_v2(payload: dict[str, int], request: fastapi.Request) -> dict[str, Any]:
    return {
        "y": payload["x"] * 2,
        "shadow": shadowdeco.in_shadow(),
        "header": request.headers.get("x-shadow-request"),
    }


def test_fastapi_app_through_starlettes_test_client(memory: sinks.Memory) -> None:
    """A FastAPI app serves live, mirrors to a FastAPI candidate, and drains on shutdown."""
    mw = asgi(
        fastapi_live, fastapi_candidate, memory, compare=compare_http(ignore=["shadow", "header"])
    )
    with TestClient(mw) as client:
        response = client.post("/predict", json={"x": 21}, params={"v": "2"})
        assert (response.status_code, response.json()) == (200, {"y": 42, "shadow": False})
    # Leaving the client sent lifespan.shutdown: the mirror was drained before it returned.
    assert counts(mw.shadow) == (1, 0, 1, {}, 0)
    (result,) = memory.results
    assert result.candidate.value.json() == {"y": 42, "shadow": True, "header": "1"}
    assert result.match is True
    assert result.inputs["args"][0]["query"] == "v=2"


def test_an_app_factory_may_build_the_same_middleware_twice() -> None:
    """Equal settings under one name share the experiment instead of raising."""

    def live(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    one = ShadowWSGIMiddleware(live, live, name="factory", sinks=[])
    two = ShadowWSGIMiddleware(live, live, name="factory", sinks=[])
    assert one.shadow is two.shadow
    with pytest.raises(ValueError, match="already used"):
        ShadowWSGIMiddleware(live, live, name="factory", sinks=[], max_body=10)


def test_the_key_option_is_recorded(memory: sinks.Memory) -> None:
    """key= is computed from the request and recorded on the result."""

    def live(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = ShadowWSGIMiddleware(
        live, live, sinks=[memory], key=lambda request: request.header("x-user")
    )
    environ = make_environ()
    environ["HTTP_X_USER"] = "u-7"
    call_wsgi(mw, environ)
    assert mw.shadow.flush(10)
    assert memory.results[0].key == "u-7"


def test_a_url_candidate_reconnects_when_the_server_closed_an_idle_connection(
    memory: sinks.Memory,
) -> None:
    """A kept-alive socket the server closed is not reused: POSTs are not lost to it."""
    import http.server
    import threading

    got: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = True  # closes without saying so: an idle timeout

        def log_message(self, *args: Any) -> None:
            pass

    closed = threading.Semaphore(0)

    class Server(http.server.ThreadingHTTPServer):
        def shutdown_request(self, request: Any) -> None:
            super().shutdown_request(request)
            closed.release()  # the idle connection is really gone now

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        def live(environ: Any, start_response: Any) -> list[bytes]:
            environ["wsgi.input"].read()
            start_response("200 OK", [("content-length", "2")])
            return [b"ok"]

        url = f"http://127.0.0.1:{server.server_address[1]}"
        mw = ShadowWSGIMiddleware(live, url, sinks=[memory], max_concurrency=1)
        for i in range(3):
            environ = make_environ(method="POST", body=f"b{i}".encode())
            call_wsgi(mw, environ)
            assert mw.shadow.flush(10)
            assert closed.acquire(timeout=10)  # before the next call reuses the socket
        assert got == [b"b0", b"b1", b"b2"]
        assert [r.candidate.status for r in memory.results] == ["ok"] * 3
    finally:
        server.shutdown()
        server.server_close()


def gzipped(data: bytes, mtime: int) -> bytes:
    return gzip.compress(data, mtime=mtime)


GZIP = [("Content-Encoding", "gzip")]


def test_compare_http_compares_gzip_bodies_decoded() -> None:
    """Two gzip streams of the same JSON differ in their timestamp: they match, compared as
    the JSON they hold (ignored paths included); different JSON does not."""
    body = b'{"y": 1, "meta": {"request_id": "a"}}'
    live = response(headers=GZIP, body=gzipped(body, 1))
    same = response(headers=GZIP, body=gzipped(body, 2))
    assert live.body_sha256 != same.body_sha256
    assert compare_http()(live, same) is True
    assert live.json() == {"y": 1, "meta": {"request_id": "a"}}
    other_id = response(headers=GZIP, body=gzipped(b'{"y": 1, "meta": {"request_id": "b"}}', 2))
    assert compare_http()(live, other_id) is False
    assert compare_http(ignore=["meta.request_id"])(live, other_id) is True
    # Bodies that are not JSON compare by their decoded bytes.
    html = response(headers=GZIP, body=gzipped(b"<p>a</p>", 1))
    assert compare_http()(html, response(headers=GZIP, body=gzipped(b"<p>a</p>", 2))) is True
    assert compare_http()(html, response(headers=GZIP, body=gzipped(b"<p>b</p>", 2))) is False


def test_compare_http_reads_every_gzip_member() -> None:
    """A gzip body may hold several members (a streamed response compressed in parts): the
    decoded body is all of them, as a client reads it."""
    live = response(headers=GZIP, body=gzipped(b'{"a": 1, ', 1) + gzipped(b'"b": 2}', 1))
    cand = response(headers=GZIP, body=gzipped(b'{"b": 2, "a": 1}', 2))
    assert live.content() == b'{"a": 1, "b": 2}'
    assert compare_http()(live, cand) is True


def test_the_recorded_text_is_decoded_only_within_the_response_cap(memory: sinks.Memory) -> None:
    """A compressed body is compared decoded even when it inflates past max_response_body,
    but the record_body text stays within the cap: past it, the body as sent."""
    moments = itertools.count(1)
    big = json.dumps({"values": [0] * 5_000}).encode()  # 15 kB of JSON, ~100 B gzipped

    def gzip_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json"), *GZIP])
        return [gzipped(big, next(moments))]

    mw = wsgi(gzip_app, gzip_app, memory, max_response_body=4_096, record_body=True)
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    [result] = memory.results
    assert result.match is True  # the gzip timestamps differ, the JSON does not
    recorded = result.to_dict()["live"]["value"]
    assert len(recorded["body"]) < 4_096
    assert recorded["body_truncated"] is False


def test_a_header_value_that_is_not_a_string_does_not_reach_the_caller(
    memory: sinks.Memory,
) -> None:
    """A lenient server (werkzeug's test client) lets an app send a header value that is not
    a string: the caller gets what it gets without the middleware, and the sample is
    settled."""

    def odd_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Encoding", 5), ("X-Odd", 7)])
        return [b"ok"]

    mw = wsgi(odd_app, odd_app, memory)
    call = call_wsgi(mw, make_environ())
    assert call.chunks == [b"ok"]
    assert mw.shadow.flush(10)
    stats = mw.shadow.stats()
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()) == 1


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_compare_http_decodes_deflate_either_way_it_is_sent(wbits: int) -> None:
    def deflated(data: bytes, level: int) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, wbits)
        return packer.compress(data) + packer.flush()

    data = b'{"scores": [0.1, 0.2, 0.3, 0.4]}' * 10
    live = response(headers=[("Content-Encoding", "deflate")], body=deflated(data, 1))
    cand = response(headers=[("Content-Encoding", "deflate")], body=deflated(data, 9))
    assert live.body != cand.body
    assert compare_http()(live, cand) is True


def test_compare_http_does_not_decode_what_it_cannot_trust() -> None:
    """A cut, corrupt or unknown encoding, or a body that inflates past the limit (a
    "zip bomb"), compares by digest: no match unless the bytes are equal."""
    data = b'{"y": 1}'

    def pair(live_body: bytes, cand_body: bytes, encoding: str = "gzip", cut: bool = False) -> bool:
        live = response(headers=[("Content-Encoding", encoding)], body=live_body)
        cand = response(headers=[("Content-Encoding", encoding)], body=cand_body)
        live.truncated = cand.truncated = cut
        return compare_http()(live, cand)

    assert pair(gzipped(data, 1), gzipped(data, 2), cut=True) is False
    # Bodies cut at the cap that agree up to it, but differ past it (their digests cover the
    # whole bodies): not a match.
    for encoding in ("identity", ""):
        live, cand = (
            response(headers=[("Content-Encoding", encoding)], body=b"same prefix")
            for _ in range(2)
        )
        live.truncated = cand.truncated = True
        live.body_sha256, cand.body_sha256 = (
            sha(b"same prefix, then a"),
            sha(b"same prefix, then b"),
        )
        assert compare_http()(live, cand) is False
    # A second gzip member is part of the body; anything after a deflate stream is garbage.
    two_members = gzipped(data, 1) + gzipped(b'{"z": 2}', 1)
    assert pair(gzipped(data, 2), two_members) is False
    assert pair(gzipped(data, 1) + b"junk", gzipped(data, 2)) is False
    deflated = zlib.compress(data)
    assert pair(deflated + deflated, zlib.compress(data, 1), encoding="deflate") is False
    assert pair(gzipped(data, 1)[:-4], gzipped(data, 2)[:-4]) is False  # no trailer
    assert pair(b"not gzip", b"not gzip either") is False
    assert pair(b"\x00br", b"\x01br", encoding="br") is False
    bomb_1, bomb_2 = (gzipped(b"\x00" * (HTTP_DECODED_LIMIT + 1), m) for m in (1, 2))
    assert len(bomb_1) < 100_000
    assert pair(bomb_1, bomb_2) is False
    assert pair(bomb_1, bomb_1) is True  # equal bytes: equal, whatever they hold


def test_compare_http_decodes_by_the_content_encoding_the_results_do_not_record(
    memory: sinks.Memory,
) -> None:
    """Through the middleware: the app gzips its JSON with the moment's timestamp and the
    candidate does too; with ``headers=`` leaving Content-Encoding out of the results, the
    pair is still compared decoded and matches."""
    moments = itertools.count(1)

    def gzip_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json"), *GZIP])
        return [gzipped(b'{"label": "cat"}', next(moments))]

    mw = wsgi(gzip_app, gzip_app, memory, headers=["content-type"], record_body=True)
    call_wsgi(mw, make_environ())
    assert mw.shadow.flush(10)
    [result] = memory.results
    assert result.live.value.body_sha256 != result.candidate.value.body_sha256
    assert result.match is True
    # With record_body, the results hold the text the app meant.
    assert result.to_dict()["candidate"]["value"]["body"] == '{"label": "cat"}'
