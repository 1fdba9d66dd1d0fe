"""ASGI middleware: mirror sampled requests to a candidate app or URL.

>>> from shadowdeco.middleware import ShadowASGIMiddleware
>>> async def live_app(scope, receive, send):
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": b"live"})
>>> app = ShadowASGIMiddleware(live_app, "http://127.0.0.1:8001", sinks=[])
>>> app.shadow.name
'shadowdeco.middleware.asgi.live_app'

FastAPI / Starlette: ``app.add_middleware(ShadowASGIMiddleware, candidate=...)`` or wrap the
app object.  Messages pass through at once, in order; lifespan and websocket scopes pass
straight through, except that ``lifespan.shutdown`` first drains the pending mirrors (up to
``drain_timeout`` seconds) so nothing is lost on a deploy.  An in-process candidate app gets
a lifespan of its own beside live's (its startup, its state, its shutdown after the drain).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .._experiment import Experiment
from .._experiment import flush as flush_all
from .._runner import Job
from ._http import (
    DEFAULT_METHODS,
    SHADOW_HEADER,
    BodyCollector,
    HttpResponse,
    LiveResponse,
    Mirror,
    Request,
    Settings,
)

__all__ = ["ShadowASGIMiddleware"]

log = logging.getLogger("shadowdeco")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SHADOW_HEADER = SHADOW_HEADER.encode("latin-1")


class ShadowASGIMiddleware(Mirror):
    """Mirror sampled HTTP requests of an ASGI ``app`` to ``candidate``.

    ``candidate`` is another ASGI app (run as a task on the server's loop) or a base URL.
    Options as :class:`~shadowdeco.middleware.ShadowWSGIMiddleware`, plus ``drain_timeout``
    (how long ``lifespan.shutdown`` waits for pending mirrors).
    """

    app: ASGIApp

    def __init__(
        self,
        app: ASGIApp,
        candidate: ASGIApp | str,
        *,
        name: str | None = None,
        sample: Any = 1.0,
        sinks: Iterable[Any] | None = None,
        compare: Any = None,
        timeout: float | None = 10.0,
        max_concurrency: int = 4,
        max_queue: int = 1000,
        enabled: bool = True,
        key: Callable[[Request], Any] | None = None,
        methods: Iterable[str] = DEFAULT_METHODS,
        max_body: int = 1 << 20,
        max_response_body: int = 1 << 20,
        max_pending_bytes: int = 64 << 20,
        record_body: bool = False,
        headers: Iterable[str] | None = None,
        deny_headers: Iterable[str] = (),
        forward_credentials: bool = False,
        drain_timeout: float = 10.0,
    ) -> None:
        if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)):
            raise TypeError(f"drain_timeout must be a number of seconds, got {drain_timeout!r}")
        if not drain_timeout >= 0:
            raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        self.drain_timeout = float(drain_timeout)
        self._setup(
            app,
            candidate,
            ASGICandidate,
            name=name,
            sample=sample,
            sinks=sinks,
            compare=compare,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            enabled=enabled,
            key=key,
            methods=methods,
            max_body=max_body,
            max_response_body=max_response_body,
            max_pending_bytes=max_pending_bytes,
            record_body=record_body,
            headers=headers,
            deny_headers=deny_headers,
            forward_credentials=forward_credentials,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(scope, receive), send)
            return
        exp = self.shadow
        if (
            kind != "http"
            or not exp._active
            or scope["method"] not in self.settings.methods
            or any(key == _SHADOW_HEADER for key, _ in scope.get("headers", ()))
        ):
            await self.app(scope, receive, send)
            return
        if not self._sampled(lambda: _request(scope, b"", self.settings)):
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope, self.settings.max_body)
        if isinstance(declared, str):  # not mirrored; the live app gets receive itself
            exp._drop_sampled(declared)
            await self.app(scope, receive, send)
            return
        job = self._admit(_request(scope, b"", self.settings))  # the body: as live reads it
        if job is None:
            await self.app(scope, receive, send)
            return
        body = _BodyTee(receive, self.settings.max_body, empty=declared == 0)
        loop = asyncio.get_running_loop()
        watcher = _Response(exp, job, self.settings, send, loop, body=body)
        try:
            await self.app(scope, body.receive, watcher.send)
        except asyncio.CancelledError:  # the server gave up on the request: the client left
            watcher.abandon(body.reason or "incomplete_response")
            raise
        except BaseException as exc:
            watcher.finish(exc)
            raise
        # Returned before its last body message (a streaming response whose client left):
        # a partial body would compare as a false mismatch.  Finished already otherwise.
        watcher.abandon("incomplete_response")

    def _lifespan_receive(self, scope: Scope, receive: Receive) -> Receive:
        candidate = self.shadow.candidate
        beside = _Lifespan(candidate, scope) if isinstance(candidate, ASGICandidate) else None

        async def observed() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup" and beside is not None:
                beside.start()  # beside live's: live's startup does not wait for it
            elif kind == "lifespan.shutdown":
                # A graceful stop: let every pending shadow finish (the mirrors, and @shadow
                # calls made by the app) before the app shuts down.  Servers such as uvicorn
                # end the process by re-raising SIGTERM, so the exit flush may never run.
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, flush_all, self.drain_timeout)
                if beside is not None:
                    await beside.stop(self.drain_timeout)
            return message

        return observed


def _request(scope: Scope, body: bytes, settings: Settings) -> Request:
    raw_path = scope.get("raw_path")
    if raw_path:
        path = raw_path.decode("latin-1")
    else:  # no raw_path: quote the decoded path back, so it is not decoded twice later
        path = urllib.parse.quote(scope.get("path", "/").encode("utf-8"), safe="/:@!$&'()*+,;=-._~")
    root = scope.get("root_path", "")
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
    root_in_path = path.startswith(root)
    return Request(
        scope["method"],
        path if root_in_path else root + path,
        scope.get("query_string", b"").decode("latin-1"),
        headers,
        body,
        scheme=scope.get("scheme", "http"),
        record_body=settings.record_body,
        shown=tuple(settings.chosen(headers)),
        root=root,
        root_in_path=root_in_path,
    )


def _declared_length(scope: Scope, max_body: int) -> int | str | None:
    """The request's Content-Length (0 for an HTTP/1 request with neither that nor
    Transfer-Encoding: no body), None when it is streamed, or why it is not mirrored: a bad
    length, or one past ``max_body`` (then the body is not even looked at)."""
    # HTTP/2 and 3 send a body in frames, with no length needed.
    declared: int | None = 0 if scope.get("http_version", "1.1").startswith("1") else None
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return "bad_request"
            if declared < 0:
                return "bad_request"
        elif key == b"transfer-encoding" and declared == 0:
            declared = None  # chunked
    if declared is not None and declared > max_body:
        return "body_too_large"
    return declared


class _BodyTee:
    """The live app's ``receive``, passed through untouched, noting the request body as the
    app reads it: the app is never made to wait for the body, nor gets a message it would
    not have got (no ``100 Continue`` it did not ask for).  The body is mirrored only if the
    app read all of it, up to ``max_body``."""

    def __init__(self, receive: Receive, max_body: int, *, empty: bool) -> None:
        self._receive = receive
        self._max_body = max_body
        self._chunks: list[bytes] = []
        self._size = 0
        self._empty = empty  # no body announced: one the app does not read is empty
        self._read = False
        self.complete = False
        self.reason: str | None = None  # why it is not mirrored, once known

    async def receive(self) -> Message:
        try:
            message = await self._receive()
        except BaseException:  # the connection reset, a cancellation: the app meets it too
            if not self.complete and self.reason is None:
                self.reason = "incomplete_body"
            raise
        if self.complete or self.reason is not None:
            return message
        self._read = True
        if message.get("type") != "http.request":  # http.disconnect: the client went away
            self.reason = "incomplete_body"
            return message
        chunk = message.get("body", b"")
        self._size += len(chunk)
        if self._size > self._max_body:
            self.reason = "body_too_large"
            self._chunks = []
        else:
            self._chunks.append(chunk)
            self.complete = not message.get("more_body", False)
        return message

    def body(self) -> bytes | str:
        """The whole body, or why it is not mirrored (``body_not_read``: the app answered
        without reading it all)."""
        if self.reason is not None:
            return self.reason
        if self.complete or (self._empty and not self._read):
            return b"".join(self._chunks)
        return "body_not_read"


class _Response(LiveResponse):
    """Forwards each live message at once, then notes what it said."""

    def __init__(
        self,
        exp: Experiment,
        job: Job,
        settings: Settings,
        send: Send,
        loop: asyncio.AbstractEventLoop,
        *,
        body: _BodyTee,
    ) -> None:
        super().__init__(exp, job, settings, loop)
        self._send = send
        self._body = body

    def request_ready(self) -> str | None:
        """The mirrored request gets the body live read; why not, if it cannot be had."""
        body = self._body.body()
        if isinstance(body, str):
            return body
        if body:
            request: Request = self._job.args[0]
            request.body = body  # not seen by anyone yet: the job is not queued
            if not self._settings.budget.reserve(request):
                return "bytes_full"
        return None

    async def send(self, message: Message) -> None:
        try:
            await self._send(message)  # first the client, then our bookkeeping
        except BaseException:  # the client is gone: what it got is no whole response
            self.abandon("incomplete_response")
            raise
        self.note(lambda: self._observe(message))

    def _observe(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))  # decoded in finish()
        elif kind == "http.response.body":
            self.body.add(message.get("body", b""))
            if not message.get("more_body", False):
                self.finish(None)  # the response is complete: the app may still run on
        elif kind == "http.response.pathsend":
            # The server sends a file itself (the pathsend extension): a whole response, but
            # its body never passes here to be compared.
            self.abandon("file_response")


class _Lifespan:
    """An in-process candidate app's own lifespan, run beside live's: started with it, its
    state given to the mirrored requests, shut down after the mirrors drained.  An app that
    fails its startup, or raises on the lifespan scope (no lifespan support, as servers
    take it), is logged and still gets its mirrors."""

    def __init__(self, candidate: ASGICandidate, scope: Scope) -> None:
        self.candidate = candidate
        self.state: dict[str, Any] = {}
        self._scope = {**scope, "state": self.state}  # live's lifespan scope, its own state
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.candidate.started = asyncio.Event()  # its mirrors wait for the startup
        self.candidate.state = self.state
        self._messages.put_nowait({"type": "lifespan.startup"})
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        started = self.candidate.started
        try:
            await self.candidate.app(self._scope, self._messages.get, self._send)
        except Exception:  # the candidate's lifespan: logged, never raised
            if started is not None and not started.is_set():
                log.info("shadowdeco: the candidate app %r has no lifespan", self.candidate.app)
            else:
                log.exception("shadowdeco: the candidate app's lifespan raised")
        finally:
            if started is not None:
                started.set()
            self._stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.failed":
            log.error("shadowdeco: the candidate app's startup failed: %s", message.get("message"))
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self.candidate.started is not None:
                self.candidate.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._stopped.set()

    async def stop(self, timeout: float) -> None:
        if self._task is None or self._task.done():
            return
        self._messages.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("shadowdeco: the candidate app did not shut down within %s s", timeout)


class ASGICandidate:
    """Runs an ASGI app on the mirrored request, as a task on the server's loop."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self._settings = settings
        #: set by its lifespan (see _Lifespan): mirrors wait for its startup, and get its state
        self.started: asyncio.Event | None = None
        self.state: dict[str, Any] | None = None

    async def __call__(self, request: Request) -> HttpResponse:
        path, _, _ = request.path.partition("?")
        if not request.root_in_path:  # as live got it: the path below the root
            path = path[len(request.root) :]
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.scheme,
            "path": _unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": request.query.encode("latin-1"),
            "root_path": request.root,  # mounted where live was
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers
                if k != SHADOW_HEADER
            ]
            + [(_SHADOW_HEADER, b"1")],
            "client": None,
            "server": None,
        }
        if self.started is not None:
            await self.started.wait()  # the app's startup (loading its model) came first
        if self.state is not None:
            scope["state"] = dict(self.state)  # per request, as servers copy it
        done = asyncio.Event()
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        state: dict[str, Any] = {"status": 0, "headers": []}
        collector = BodyCollector(self._settings.max_response_body, head=request.method == "HEAD")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", ())
                ]
            elif message["type"] == "http.response.body":
                collector.add(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            # As for live: an error after the last body message is no part of the response
            # the client got.
            if not done.is_set():
                raise
        finally:
            done.set()
        return collector.response(state["status"], state["headers"], self._settings)

    def __repr__(self) -> str:
        return f"ASGICandidate({self.app!r})"

    def __eq__(self, other: object) -> bool:
        # Equal settings make an equal experiment: an app factory may build it twice.
        return (
            isinstance(other, ASGICandidate)
            and self.app is other.app
            and self._settings == other._settings
        )

    def __hash__(self) -> int:
        return hash(id(self.app))


def _unquote(path: str) -> str:
    return urllib.parse.unquote(path)
