"""Found by a review of the middleware, each test seen failing before its fix: PEP 3333 and
ASGI conformance, a sampled request counted however it ends, and the same app comparing
equal to itself whichever way it is mirrored."""

from __future__ import annotations

import asyncio
import contextlib
import io
import resource
import socket
import sys
import threading
import wsgiref.handlers
import wsgiref.util
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import uvicorn
from http_helpers import http_scope
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import shadowdeco
from shadowdeco import ShadowResult, sinks
from shadowdeco.middleware import ShadowASGIMiddleware, ShadowWSGIMiddleware, _http


@pytest.fixture(autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    shadowdeco.shutdown(timeout=5)


def _environ(method: str = "GET", path: str = "/", **extra: Any) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(b"")}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(extra)
    return environ


def _serve_wsgi(app: Any, environ: dict[str, Any]) -> tuple[str, bytes]:
    """A server's view: start_response re-raises exc_info once the headers were sent."""
    seen: dict[str, Any] = {"sent": False}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if exc_info is not None and seen["sent"]:
            raise exc_info[1].with_traceback(exc_info[2])
        seen["status"] = status
        return lambda data: seen.update(sent=True)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        with contextlib.suppress(Exception):
            getattr(result, "close", lambda: None)()
    return seen["status"], body


def _only_result(app: Any, memory: sinks.Memory) -> ShadowResult:
    assert app.shadow.flush(10)
    (result,) = memory.results
    return result


# -- WSGI --------------------------------------------------------------------------------------


def _replaces_status_with_exc_info(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("boom")
    except ValueError:  # headers not sent yet: the app may replace the status
        start_response("500 Internal Server Error", [], exc_info=sys.exc_info())
    return [b"error"]


def test_wsgi_exc_info_may_be_passed_by_keyword() -> None:
    """PEP 3333's signature is ``start_response(status, headers, exc_info=None)``."""
    app_ = _replaces_status_with_exc_info
    expected = ("500 Internal Server Error", b"error")
    assert _serve_wsgi(app_, _environ()) == expected
    memory = sinks.Memory()
    app = ShadowWSGIMiddleware(app_, app_, name="conf-exc-info", sinks=[memory])
    assert _serve_wsgi(app, _environ()) == expected
    result = _only_result(app, memory)
    assert result.match is True
    assert result.live.value.status == result.candidate.value.status == 500


class _Timeout(BaseException):
    """What gevent.Timeout is: not an Exception."""


class _TimingOut:
    def read(self, size: int = -1) -> bytes:
        raise _Timeout

    readline = read


def test_wsgi_a_body_read_ended_by_a_base_exception_is_counted() -> None:
    def app_(environ: Any, start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(5)
        start_response("200 OK", [])
        return [b"ok"]

    app = ShadowWSGIMiddleware(app_, app_, name="conf-read-timeout", sinks=[sinks.Memory()])
    environ = _environ("POST", CONTENT_LENGTH="5", **{"wsgi.input": _TimingOut()})
    with pytest.raises(_Timeout):  # as live would meet it
        app(environ, lambda *args: None)
    assert app.shadow.flush(10)
    stats = app.shadow.stats()
    assert stats.sampled == 1
    assert dict(stats.dropped) == {"incomplete_body": 1}


def test_wsgi_a_path_info_that_is_not_latin1_reaches_live_unchanged() -> None:
    """A lenient server's str PATH_INFO (PEP 3333 says latin-1) crashed the request."""

    def app_(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode("utf-8")]

    expected = _serve_wsgi(app_, _environ(path="/\u20ac"))
    memory = sinks.Memory()
    app = ShadowWSGIMiddleware(app_, app_, name="conf-path", sinks=[memory])
    assert _serve_wsgi(app, _environ(path="/\u20ac")) == expected
    # The candidate gets it as PEP 3333 says (the UTF-8 bytes as latin-1): mirrored.
    assert _only_result(app, memory).candidate.status == "ok"


class _Chunks(list[bytes]):
    pass


def _wire(app: Any) -> bytes:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x"}
    environ.update(SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1", QUERY_STRING="")
    out = io.BytesIO()
    handler = wsgiref.handlers.SimpleHandler(io.BytesIO(b""), out, io.StringIO(), environ)
    handler.origin_server = False
    handler.run(app)
    return out.getvalue()


def test_wsgi_a_sized_iterable_keeps_its_length() -> None:
    """A server sets Content-Length from len() of a one-chunk body: a list subclass too."""

    def app_(environ: Any, start_response: Any) -> _Chunks:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Chunks([b"hello"])

    expected = _wire(app_)
    assert b"Content-Length: 5" in expected
    app = ShadowWSGIMiddleware(app_, app_, name="conf-sized", sinks=[sinks.Memory()])
    assert _wire(app) == expected


class _CloseRaises:
    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"

    def close(self) -> None:
        raise RuntimeError("close failed")


def _close_raises(environ: Any, start_response: Any) -> _CloseRaises:
    start_response("200 OK", [])
    return _CloseRaises()


def _exc_info_after_headers_sent(environ: Any, start_response: Any) -> list[bytes]:
    write = start_response("200 OK", [])
    write(b"partial")
    try:
        raise ValueError("late")
    except ValueError:
        start_response("500 Internal Server Error", [], sys.exc_info())  # re-raises
    return [b"error page"]


@pytest.mark.parametrize("app_", [_close_raises, _exc_info_after_headers_sent])
def test_wsgi_the_same_app_is_observed_alike_as_live_and_as_candidate(app_: Any) -> None:
    """close() raising after a whole body (the client got it: ok), and exc_info after the
    headers went out (the server re-raises: an error), are the same on both arms."""
    memory = sinks.Memory()
    app = ShadowWSGIMiddleware(app_, app_, name=f"conf-alike-{app_.__name__}", sinks=[memory])
    with contextlib.suppress(Exception):
        _serve_wsgi(app, _environ())
    result = _only_result(app, memory)
    assert result.live.status == result.candidate.status


# -- ASGI --------------------------------------------------------------------------------------


def _scope(method: str = "GET", path: str = "/", **extra: Any) -> dict[str, Any]:
    scope = http_scope(method, path, headers=[("host", "example")])
    scope.update(extra)
    return scope


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Any) -> None:
    pass


async def _raises_after_its_response(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
    raise RuntimeError("after the response")


def test_asgi_an_error_after_the_whole_response_is_observed_alike() -> None:
    app_ = _raises_after_its_response
    memory = sinks.Memory()
    app = ShadowASGIMiddleware(app_, app_, name="conf-asgi-after", sinks=[memory])

    async def main() -> None:
        with contextlib.suppress(RuntimeError):
            await app(_scope(), _no_body, _discard)
        assert await app.shadow.aflush(10)

    asyncio.run(main())
    (result,) = memory.results
    assert result.live.status == result.candidate.status == "ok"
    assert result.match is True


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_asgi_a_request_cancelled_while_its_body_is_read_is_counted() -> None:
    app = ShadowASGIMiddleware(_echo, _echo, name="conf-asgi-cancel", sinks=[sinks.Memory()])
    scope = _scope("POST", headers=[(b"transfer-encoding", b"chunked")])

    async def main() -> None:
        first = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not first.is_set():
                first.set()
                return {"type": "http.request", "body": b"abc", "more_body": True}
            await asyncio.Event().wait()  # the rest of the body never comes
            raise AssertionError("unreachable")

        task = asyncio.ensure_future(app(scope, receive, _discard))
        await first.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await app.shadow.aflush(10)

    asyncio.run(main())
    stats = app.shadow.stats()
    assert stats.sampled == 1
    assert dict(stats.dropped) == {"incomplete_body": 1}


async def _hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


def _hello_app() -> Starlette:
    return Starlette(routes=[Route("/hello", _hello)])  # answers HEAD with GET's body


def test_head_compares_without_a_body_against_a_url_candidate() -> None:
    """The server drops the live app's body for HEAD, and the candidate sends none: the same
    app matches itself."""
    config = uvicorn.Config(_hello_app(), host="127.0.0.1", port=0, lifespan="off")
    config.log_level = "error"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            thread.join(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        memory = sinks.Memory()
        app = ShadowASGIMiddleware(
            _hello_app(), f"http://127.0.0.1:{port}", name="conf-head", sinks=[memory]
        )

        async def main() -> None:
            await app(_scope("HEAD", "/hello"), _no_body, _discard)

        asyncio.run(main())
        assert app.shadow.flush(10)
        (result,) = memory.results
        assert result.candidate.status == "ok"
        assert result.match is True
        assert result.live.value.body_len == 0
    finally:
        server.should_exit = True
        thread.join(10)


# -- URL candidates ----------------------------------------------------------------------------


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def _ok(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def test_a_kept_alive_connection_is_reused_past_descriptor_1023(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """select() cannot take a descriptor past 1023: each check said "stale" in a process
    with many files open, and every mirror opened a new connection."""
    monkeypatch.setattr(_http, "KEEPALIVE_IDLE", 3600.0)  # a stalled machine: no reconnect
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("cannot raise the descriptor limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    filler = [socket.socket() for _ in range(1100)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.daemon_threads = True
    server.connections = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        app = ShadowWSGIMiddleware(_ok, url, name="conf-fd", sinks=[], max_concurrency=1)
        for _ in range(3):
            _serve_wsgi(app, _environ())
            assert app.shadow.flush(10)
        assert app.shadow.stats().emitted == 3
        assert server.connections == 1  # type: ignore[attr-defined]
    finally:
        shadowdeco.shutdown(timeout=5)
        server.shutdown()
        server.server_close()
        for sock in filler:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- ASGI: the body is noted as live reads it, never read ahead of the app -------------------


async def _echo_as_it_comes(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = message.get("more_body", False)
        await send({"type": "http.response.body", "body": message["body"], "more_body": more})
        if not more:
            return


async def _talk_to(app: Any) -> bytes:
    """A client that sends its next chunk only once the previous one came back."""
    echoed: asyncio.Queue[None] = asyncio.Queue()
    sent = 0
    got: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await echoed.get()
        sent += 1
        return {"type": "http.request", "body": b"ping-%d" % sent, "more_body": sent < 3}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            got.append(message["body"])
            echoed.put_nowait(None)

    scope = _scope("POST", "/echo", http_version="2", headers=[])
    await asyncio.wait_for(app(scope, receive, send), 30)
    return b"".join(got)


def test_asgi_a_body_streamed_both_ways_is_not_held_up_and_is_mirrored() -> None:
    """The middleware read the whole body before calling the app: an app that answers each
    chunk as it comes waited for a body its client would send only after the answers."""
    memory = sinks.Memory()
    app_ = _echo_as_it_comes
    app = ShadowASGIMiddleware(app_, app_, name="conf-asgi-echo", sinks=[memory])

    async def main() -> bytes:
        echoed = await _talk_to(app)
        assert await app.shadow.aflush(10)
        return echoed

    assert asyncio.run(main()) == b"ping-1ping-2ping-3"
    (result,) = memory.results
    assert result.inputs is not None
    assert result.inputs["args"][0]["body_len"] == len(b"ping-1ping-2ping-3")
    assert result.match is True


async def _refuses_unread(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": b"no"})


def test_asgi_an_app_that_answers_without_reading_the_body_is_not_made_to_read_it() -> None:
    """Under uvicorn, reading the body for an ``Expect: 100-continue`` request makes the
    server send ``100 Continue``: the middleware must not read what live does not.  The
    request is not mirrored (its body is unknown), counted ``body_not_read``."""
    app = ShadowASGIMiddleware(_refuses_unread, _refuses_unread, name="conf-unread", sinks=[])
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"0123456789", "more_body": False}

    async def main() -> None:
        scope = _scope("POST", headers=[(b"content-length", b"10"), (b"expect", b"100-continue")])
        await app(scope, receive, _discard)
        assert await app.shadow.aflush(10)

    asyncio.run(main())
    assert reads == 0
    assert dict(app.shadow.stats().dropped) == {"body_not_read": 1}


def test_asgi_a_file_sent_by_the_server_is_counted_as_such() -> None:
    """The pathsend extension: the server sends the file, whole, and its body never passes
    the middleware (it was counted as a client gone mid-response)."""

    async def sends_a_file(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    app = ShadowASGIMiddleware(sends_a_file, sends_a_file, name="conf-pathsend", sinks=[])
    scope = _scope(extensions={"http.response.pathsend": {}})

    async def main() -> None:
        await app(scope, _no_body, _discard)
        assert await app.shadow.aflush(10)

    asyncio.run(main())
    assert dict(app.shadow.stats().dropped) == {"file_response": 1}


def test_wsgi_a_write_that_fails_is_no_whole_response() -> None:
    """write() raising (the client gone) ends the live response where the client is
    concerned, even when the app catches it and returns the rest: not compared, counted."""

    def app_(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        with contextlib.suppress(OSError):
            write(b"first")
        return [b"rest"]

    def gone(status: str, headers: Any, exc_info: Any = None) -> Any:
        def write(data: bytes) -> None:
            raise OSError("the client went away")

        return write

    app = ShadowWSGIMiddleware(app_, app_, name="conf-write-gone", sinks=[])
    result = app(_environ(), gone)
    assert list(result) == [b"rest"]
    assert app.shadow.flush(10)
    assert dict(app.shadow.stats().dropped) == {"incomplete_response": 1}
