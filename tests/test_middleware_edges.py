"""The middleware at the edges: mounted apps, requests and responses that fail midway, a
candidate swapped while serving, header rules that overlap, and options that are wrong."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import itertools
import json
import pickle
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fastapi
import pytest
from helpers import run_script
from http_helpers import AsgiClient, CandidateServer, body_messages, call_wsgi, http_scope
from http_helpers import make_environ as environ_of
from starlette.exceptions import StarletteDeprecationWarning

import shadowdeco
from shadowdeco import sinks
from shadowdeco.middleware import HttpResponse, ShadowASGIMiddleware, ShadowWSGIMiddleware

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 in its TestClient; the httpx we have works the same.
    warnings.filterwarnings("ignore", message=".*httpx2", category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

_names = itertools.count()


def wsgi(app: Any, candidate: Any, memory: sinks.Memory, **options: Any) -> ShadowWSGIMiddleware:
    return ShadowWSGIMiddleware(
        app, candidate, name=f"edge-wsgi-{next(_names)}", sinks=[memory], **options
    )


def asgi(app: Any, candidate: Any, memory: sinks.Memory, **options: Any) -> ShadowASGIMiddleware:
    return ShadowASGIMiddleware(
        app, candidate, name=f"edge-asgi-{next(_names)}", sinks=[memory], **options
    )


def serve(app: ShadowASGIMiddleware, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One ASGI call on a loop that stays open until the mirror is done (it runs there)."""

    async def call() -> None:
        try:
            await app(scope, receive, send)
        finally:
            assert await app.shadow.aflush(10)

    asyncio.run(call())


def adds_up(exp: shadowdeco.Experiment) -> shadowdeco.Stats:
    stats = exp.stats()
    assert stats.sampled == stats.emitted + sum(stats.dropped.values()) + stats.in_flight
    return stats


# --------------------------------------------------------------------------------------------
# Apps mounted under a prefix


def where_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with how it was mounted; 404 unless its own path is /predict."""
    found = environ["PATH_INFO"] == "/predict"
    start_response("200 OK" if found else "404 Not Found", [("Content-Type", "text/plain")])
    return [f"{environ.get('SCRIPT_NAME', '')}|{environ['PATH_INFO']}".encode("latin-1")]


def test_a_mounted_wsgi_app_keeps_its_mount_point_in_the_candidate(memory: sinks.Memory) -> None:
    """SCRIPT_NAME and PATH_INFO reach an in-process candidate split as live got them; the
    result records the whole path."""
    app = wsgi(where_app, where_app, memory)
    environ = environ_of("GET", "/predict")
    environ["SCRIPT_NAME"] = "/api"
    live = call_wsgi(app, environ)
    assert app.shadow.flush(10)
    (result,) = memory.results
    assert live.body == b"/api|/predict"
    assert result.candidate.value.status == 200
    assert result.candidate.value.body == b"/api|/predict"
    assert result.match is True
    assert result.inputs["args"][0]["path"] == "/api/predict"


async def where_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with root_path and path; 404 unless the path below the root is /predict."""
    root, path = scope.get("root_path", ""), scope["path"]
    found = path.removeprefix(root) == "/predict"
    await send({"type": "http.response.start", "status": 200 if found else 404, "headers": []})
    await send({"type": "http.response.body", "body": f"{root}|{path}".encode()})


@pytest.mark.parametrize("full_path", [True, False], ids=["path-with-root", "path-below-root"])
def test_a_mounted_asgi_app_keeps_its_root_path_in_the_candidate(
    memory: sinks.Memory, full_path: bool
) -> None:
    """root_path reaches an in-process candidate as live got it (uvicorn --root-path and
    Starlette's Mount put the root in path too; older servers did not)."""
    app = asgi(where_asgi, where_asgi, memory)
    scope = http_scope("GET", "/api/predict" if full_path else "/predict")
    scope["root_path"] = "/api"
    client = AsgiClient(body_messages(b""))
    serve(app, scope, client.receive, client.send)
    (result,) = memory.results
    assert client.status == 200
    assert result.candidate.value.status == 200
    assert result.candidate.value.body == client.body
    assert result.match is True
    assert result.inputs["args"][0]["path"] == "/api/predict"


# --------------------------------------------------------------------------------------------
# The lifespan of an in-process ASGI candidate


def model_app(factor: int, events: list[str]) -> Any:
    """A FastAPI app that loads its "model" at startup, as ML services do."""

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append(f"startup x{factor}")
        yield {"model": lambda x: x * factor}
        events.append(f"shutdown x{factor}")

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/predict")
    def predict(x: int, request: fastapi.Request) -> dict[str, int]:
        return {"y": request.state.model(x)}

    return app


def test_an_asgi_candidate_app_gets_its_own_lifespan(memory: sinks.Memory) -> None:
    """The candidate app starts up beside live (its own state: the model it loads) and
    shuts down after the mirrors drained, before live does; mirrors see its state."""
    events: list[str] = []
    app = asgi(model_app(2, events), model_app(3, events), memory)
    with TestClient(app) as client:
        assert sorted(events) == ["startup x2", "startup x3"]
        assert client.get("/predict", params={"x": 5}).json() == {"y": 10}
        assert app.shadow.flush(10)
    assert events[2:] == ["shutdown x3", "shutdown x2"]
    (result,) = memory.results
    assert result.candidate.status == "ok"
    assert json.loads(result.candidate.value.body) == {"y": 15}


async def no_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "this app serves HTTP only"
    await tagged_asgi(b"plain")(scope, receive, send)


def test_a_candidate_without_lifespan_support_leaves_live_starting(
    memory: sinks.Memory,
) -> None:
    """An app that raises on the lifespan scope (servers treat that as "no lifespan") does
    not stop live's startup, and its mirrors run."""
    events: list[str] = []
    app = asgi(model_app(2, events), no_lifespan_app, memory)
    with TestClient(app) as client:
        assert client.get("/predict", params={"x": 1}).json() == {"y": 2}
        assert app.shadow.flush(10)
    assert events == ["startup x2", "shutdown x2"]
    assert memory.results[0].candidate.value.body == b"plain"


# --------------------------------------------------------------------------------------------
# A candidate swapped while serving


def tagged_app(tag: bytes) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [tag]

    return app


def test_a_wsgi_candidate_can_be_swapped_for_an_app_or_a_url(
    memory: sinks.Memory, candidate_server: CandidateServer
) -> None:
    """``.shadow.candidate`` takes what the constructor takes: another app, or a base URL."""
    app = wsgi(tagged_app(b"v1"), tagged_app(b"v1"), memory)
    app.shadow.candidate = tagged_app(b"v2")
    call_wsgi(app, environ_of("GET", "/predict"))
    assert app.shadow.flush(10)
    assert memory.results[-1].candidate.value.body == b"v2"
    app.shadow.candidate = candidate_server.url
    call_wsgi(app, environ_of("GET", "/predict"))
    assert app.shadow.flush(10)
    assert candidate_server.wait_for(1)[0].path == "/predict"
    assert memory.results[-1].candidate.status == "ok"
    with pytest.raises(ValueError, match="candidate"):
        app.shadow.candidate = "ftp://nowhere"
    with pytest.raises(TypeError, match="candidate"):
        app.shadow.candidate = 42


def tagged_asgi(tag: bytes) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": tag})

    return app


def test_an_asgi_candidate_can_be_swapped_for_another_app(memory: sinks.Memory) -> None:
    app = asgi(tagged_asgi(b"v1"), tagged_asgi(b"v1"), memory)
    app.shadow.candidate = tagged_asgi(b"v2")
    client = AsgiClient(body_messages(b""))
    serve(app, http_scope("GET", "/"), client.receive, client.send)
    (result,) = memory.results
    assert result.candidate.value.body == b"v2"
    assert result.match is False


# --------------------------------------------------------------------------------------------
# Requests and responses that fail midway


def bad_list_app(environ: dict[str, Any], start_response: Any) -> list[Any]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]  # an app bug: the server would fail on it too


def bad_generator_app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield "not bytes"


@pytest.mark.parametrize("app", [bad_list_app, bad_generator_app])
def test_a_body_that_is_not_bytes_reaches_the_server_and_settles_the_sample(
    memory: sinks.Memory, app: Any
) -> None:
    """The server gets the very chunks the app made (and fails on them as it would without
    the middleware); the sample is settled with live's error, not left in flight for every
    flush to wait on."""
    wrapped = wsgi(app, app, memory)
    assert call_wsgi(wrapped, environ_of("GET", "/")).chunks == ["not bytes"]
    assert wrapped.shadow.flush(10)
    stats = adds_up(wrapped.shadow)
    assert (stats.sampled, stats.emitted, stats.in_flight) == (1, 1, 0)
    assert memory.results[0].live.status == "error"


class ClientGone(Exception):
    pass


async def reading_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body; answers 400 if reading fails, as frameworks do."""
    try:
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
    except ClientGone:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"live handled it"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_receive_that_raises_mid_body_reaches_the_live_app(memory: sinks.Memory) -> None:
    """The live app gets the messages read so far, then the same exception, exactly as
    without the middleware; the sample is counted as incomplete_body."""
    app = asgi(reading_app, reading_app, memory)
    incoming = body_messages(b"part one, ", b"part two")[:1]
    handed: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            handed.append(incoming.pop(0))
            return handed[-1]
        raise ClientGone("connection reset while reading the body")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    serve(app, http_scope("POST", "/"), receive, send)
    assert sent[0]["status"] == 400
    assert sent[1]["body"] == b"live handled it"
    stats = adds_up(app.shadow)
    assert dict(stats.dropped) == {"incomplete_body": 1}
    assert memory.results == []


async def streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class Disconnected(Exception):
    pass


def test_an_asgi_response_cut_short_is_counted_not_compared(memory: sinks.Memory) -> None:
    """A client that goes away mid-response leaves a partial live body: it would compare as
    a false mismatch, so it is counted as incomplete_response (as for WSGI)."""
    app = asgi(streaming_app, streaming_app, memory)
    client = AsgiClient(body_messages(b""))
    chunks = 0

    def on_send(message: dict[str, Any]) -> None:
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 2:
                raise Disconnected  # the server's send fails: the client is gone

    client.on_send = on_send
    with pytest.raises(Disconnected):
        serve(app, http_scope("GET", "/"), client.receive, client.send)
    assert dict(adds_up(app.shadow).dropped) == {"incomplete_response": 1}
    assert memory.results == []


async def returns_early_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stops after the first chunk (a server that swallowed the disconnect)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"one ", "more_body": True})


def test_an_asgi_app_that_returns_mid_response_is_counted_not_compared(
    memory: sinks.Memory,
) -> None:
    """The app returned without its final body message: the response is incomplete."""
    app = asgi(returns_early_app, streaming_app, memory)
    client = AsgiClient(body_messages(b""))
    serve(app, http_scope("GET", "/"), client.receive, client.send)
    assert client.body == b"one "
    assert dict(adds_up(app.shadow).dropped) == {"incomplete_response": 1}
    assert memory.results == []


# --------------------------------------------------------------------------------------------
# Headers


def test_deny_headers_withhold_a_credential_that_forward_credentials_lets_through(
    memory: sinks.Memory, candidate_server: CandidateServer
) -> None:
    """forward_credentials=True forwards Authorization and Cookie, except the ones
    deny_headers names: deny wins."""
    app = wsgi(
        where_app,
        candidate_server.url,
        memory,
        forward_credentials=True,
        deny_headers=["cookie", "x-secret"],
    )
    headers = [("Authorization", "Bearer t"), ("Cookie", "session=1"), ("X-Secret", "s")]
    call_wsgi(app, environ_of("GET", "/predict", headers=headers))
    (seen,) = candidate_server.wait_for(1)
    assert seen.header("authorization") == "Bearer t"
    assert seen.header("cookie") is None
    assert seen.header("x-secret") is None


# --------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"methods": None}, "methods"),
        ({"methods": [1]}, "methods"),
        ({"methods": "GET"}, "methods"),
        ({"headers": [1]}, "headers"),
        ({"deny_headers": None}, "deny_headers"),
        ({"deny_headers": [b"x-a"]}, "deny_headers"),
    ],
)
def test_bad_header_and_method_options_name_the_parameter(
    options: dict[str, Any], param: str
) -> None:
    for middleware in (ShadowWSGIMiddleware, ShadowASGIMiddleware):
        with pytest.raises((TypeError, ValueError), match=param):
            middleware(where_app, where_app, name=f"edge-bad-{next(_names)}", **options)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:notaport", "http://[::1", "http://127.0.0.1:99999"]
)
def test_a_bad_candidate_url_names_the_parameter_and_the_value(url: str) -> None:
    with pytest.raises(ValueError, match="candidate") as info:
        ShadowWSGIMiddleware(where_app, url, name=f"edge-url-{next(_names)}")
    assert url in str(info.value)


# --------------------------------------------------------------------------------------------
# The bytes that pending mirrors hold: max_pending_bytes


class HeldCandidate:
    """A WSGI candidate app that answers ``b"ok"`` once ``release`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.entered.set()
        self.release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_past_max_pending_bytes_are_not_mirrored_and_counted(
    memory: sinks.Memory, chunked: bool
) -> None:
    """Behind a hung candidate, mirrors stop when the bodies they hold reach the bound (not
    only when max_queue items wait): each later request is served live and counted as
    bytes_full, and mirroring resumes once the held results are let go."""
    candidate = HeldCandidate()
    wrapped = wsgi(ok_app, candidate, memory, max_concurrency=1, max_pending_bytes=3_500)
    body = b"x" * 1_000
    for _ in range(10):
        call = call_wsgi(wrapped, environ_of("POST", "/", body=body, chunked=chunked))
        assert (call.status, call.chunks) == ("200 OK", [b"ok"])
    # 1,000 + 2 bytes (the request, live's "ok") per mirror: three fit in 3,500.
    stats = adds_up(wrapped.shadow)
    assert (stats.sampled, stats.dropped) == (10, {"bytes_full": 7})
    assert wrapped.pending_bytes == 3 * 1_002
    candidate.release.set()
    assert wrapped.shadow.flush(10)
    assert wrapped.shadow.stats().emitted == 3
    assert wrapped.pending_bytes >= 3 * 4  # both responses' "ok": Memory keeps the results
    memory.clear()
    gc.collect()
    assert wrapped.pending_bytes == 0
    call_wsgi(wrapped, environ_of("POST", "/", body=body, chunked=chunked))
    assert wrapped.shadow.flush(10)
    assert adds_up(wrapped.shadow).emitted == 4


def test_an_asgi_body_past_max_pending_bytes_is_counted_and_served_live(
    memory: sinks.Memory,
) -> None:
    release = asyncio.Event()

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()
        await reading_app(scope, receive, send)

    wrapped = asgi(reading_app, held, memory, max_concurrency=1, max_pending_bytes=2_500)

    async def run() -> list[int]:
        statuses = []
        for _ in range(4):
            client = AsgiClient(body_messages(b"x" * 600, b"y" * 400))
            await wrapped(http_scope("POST", "/"), client.receive, client.send)
            statuses.append(client.sent[0]["status"])
        stats = adds_up(wrapped.shadow)
        assert stats.dropped == {"bytes_full": 2}
        assert wrapped.pending_bytes == 2 * 1_002
        release.set()
        assert await wrapped.shadow.aflush(10)
        return statuses

    assert asyncio.run(run()) == [200] * 4
    assert wrapped.shadow.stats().emitted == 2


def test_a_body_larger_than_max_pending_bytes_alone_is_never_mirrored(
    memory: sinks.Memory,
) -> None:
    wrapped = wsgi(ok_app, ok_app, memory, max_pending_bytes=100)
    call_wsgi(wrapped, environ_of("POST", "/", body=b"x" * 101))
    call_wsgi(wrapped, environ_of("GET", "/"))  # no body: nothing to hold
    assert wrapped.shadow.flush(10)
    stats = adds_up(wrapped.shadow)
    assert (stats.emitted, stats.dropped) == (1, {"bytes_full": 1})


@pytest.mark.parametrize("value", [-1, 1.5, "64M", True, None])
def test_a_bad_max_pending_bytes_names_the_parameter(value: Any) -> None:
    for kind in (ShadowWSGIMiddleware, ShadowASGIMiddleware):
        with pytest.raises(ValueError, match=rf"max_pending_bytes .*{value!r}"):
            kind(ok_app, ok_app, name=f"bad-bytes-{next(_names)}", max_pending_bytes=value)


def test_copies_of_a_charged_body_do_not_give_its_bytes_back_twice(memory: sinks.Memory) -> None:
    """A copy or an unpickled Request / HttpResponse holds the same body but was never
    charged: freeing it must not take bytes off the budget (it would drift below what the
    mirrors really hold, and the bound would loosen)."""
    wrapped = wsgi(ok_app, ok_app, memory)
    call_wsgi(wrapped, environ_of("POST", "/", body=b"x" * 1_000))
    assert wrapped.shadow.flush(10)
    [result] = memory.results
    held = wrapped.pending_bytes
    assert held == 2 + 2  # live's and the candidate's "ok", kept by the result
    response = result.live.value
    copies = [copy.copy(response), copy.deepcopy(response)]
    copies.append(pickle.loads(pickle.dumps(response)))  # noqa: S301 - our own bytes
    assert all(c.body == response.body and c.status == response.status for c in copies)
    del copies, response, result
    gc.collect()
    assert wrapped.pending_bytes == held
    memory.clear()
    gc.collect()
    assert wrapped.pending_bytes == 0


def test_requests_without_a_body_stop_being_mirrored_when_the_bound_is_reached(
    memory: sinks.Memory,
) -> None:
    """GETs hold no request body, but their live responses are kept for comparison: once the
    responses held reach max_pending_bytes, a GET is not mirrored either."""

    def hundred(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"h" * 100]

    candidate = HeldCandidate()
    wrapped = wsgi(hundred, candidate, memory, max_concurrency=1, max_pending_bytes=250)
    for _ in range(10):
        assert call_wsgi(wrapped, environ_of("GET", "/")).chunks == [b"h" * 100]
    stats = adds_up(wrapped.shadow)
    assert stats.dropped == {"bytes_full": 7}  # 0, 100 and 200 held: admitted; 300: full
    assert wrapped.pending_bytes == 300
    candidate.release.set()
    assert wrapped.shadow.flush(10)


def test_middlewares_sharing_an_experiment_share_its_byte_budget(memory: sinks.Memory) -> None:
    """An app factory that builds the middleware twice gets one experiment: the second
    middleware's mirrors count against the same bound as the first's."""
    first = ShadowWSGIMiddleware(ok_app, ok_app, name="bytes-shared", sinks=[memory])
    second = ShadowWSGIMiddleware(ok_app, ok_app, name="bytes-shared", sinks=[memory])
    assert first.shadow is second.shadow
    call_wsgi(second, environ_of("POST", "/", body=b"x" * 1_000))
    assert second.shadow.flush(10)
    assert first.pending_bytes == second.pending_bytes == 2 + 2  # both "ok"s, in Memory


def test_a_forked_child_starts_with_an_empty_byte_budget(tmp_path: Any) -> None:
    """The parent's pending mirrors are counted as fork in the child, and their bytes are not
    held against it; the budget's lock, held by a parent thread at fork, does not deadlock."""
    proc = run_script(
        """
        import io, os, signal, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        from shadowdeco import sinks
        from shadowdeco.middleware import ShadowWSGIMiddleware

        release = threading.Event()

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]

        def held(environ, start_response):
            release.wait(30)
            return app(environ, start_response)

        def post(wrapped, size):
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": str(size),
                       "wsgi.input": io.BytesIO(b"x" * size), "SERVER_NAME": "t",
                       "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
            return b"".join(wrapped(environ, lambda *a: None))

        memory = sinks.Memory()
        wrapped = ShadowWSGIMiddleware(app, held, name="fork-bytes", sinks=[memory],
                                       max_pending_bytes=4_000)
        post(wrapped, 3_000)  # running in the parent, holding 3,002 bytes
        budget = wrapped.settings.budget
        holder = threading.Thread(target=budget._lock.acquire)
        holder.start(); holder.join()  # a parent thread holds the lock at fork
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a deadlock ends the child, not the test run
            release.set()  # the child's own candidates answer
            ok = wrapped.pending_bytes == 0
            ok = ok and post(wrapped, 3_000) == b"ok" and wrapped.shadow.flush(10)
            stats = wrapped.shadow.stats()
            ok = ok and dict(stats.dropped) == {"fork": 1} and stats.emitted == 1
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        budget._lock.release()
        release.set()
        print(os.waitstatus_to_exitcode(status), wrapped.shadow.flush(10))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]


def test_copies_of_a_subclass_keep_every_attribute() -> None:
    class Tagged(HttpResponse):
        __slots__ = ("tag",)

    tagged = Tagged(200, [], b"x", body_len=1, body_sha256="", truncated=False, record_body=False)
    tagged.tag = "t"
    for twin in (copy.copy(tagged), copy.deepcopy(tagged)):
        assert (twin.status, twin.body, twin.tag) == (200, b"x", "t")


def test_what_a_lenient_server_takes_from_the_app_never_fails_the_caller(
    memory: sinks.Memory,
) -> None:
    """An app's response that breaks the spec but that its server (or test client) takes
    anyway: the caller gets what it gets without the middleware; a sample we cannot
    summarise is counted as internal_error, not recorded as a comparison of our own errors."""

    def no_code(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def text_write(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])("not bytes")
        return []

    for app in (no_code, text_write):
        wrapped = wsgi(app, app, memory)
        call_wsgi(wrapped, environ_of("GET", "/"))
        assert wrapped.shadow.flush(10)
        assert adds_up(wrapped.shadow).dropped == {"internal_error": 1}, app

    async def text_headers(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [("x-odd", "s")]})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped_asgi = asgi(text_headers, text_headers, memory)
    client = AsgiClient(body_messages(b""))
    serve(wrapped_asgi, http_scope("GET", "/"), client.receive, client.send)
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert adds_up(wrapped_asgi.shadow).emitted == 1  # text headers are read as they are
    assert [r.live.value.header("x-odd") for r in memory.results] == ["s"]


def test_copies_of_a_subclass_keep_its_private_slots() -> None:
    class Private(HttpResponse):
        __slots__ = ("__tag",)

        def __init__(self) -> None:
            super().__init__(
                200, [], b"", body_len=0, body_sha256="", truncated=False, record_body=False
            )
            self.__tag = "s"

        def tag(self) -> str:
            return self.__tag

    for twin in (copy.copy(Private()), copy.deepcopy(Private())):
        assert twin.tag() == "s"
