"""WSGI middleware: mirror sampled requests to a candidate app or URL.

>>> from shadowdeco.middleware import ShadowWSGIMiddleware
>>> def live_app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"live"]
>>> def candidate_app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"candidate"]
>>> app = ShadowWSGIMiddleware(live_app, candidate_app, sinks=[])
>>> app.shadow.name
'shadowdeco.middleware.wsgi.live_app'

Flask: ``app.wsgi_app = ShadowWSGIMiddleware(app.wsgi_app, "http://127.0.0.1:8001")``;
Django: wrap ``get_wsgi_application()`` in ``wsgi.py``.  The live response streams to the
client unchanged: the iterable stays lazy, ``close()`` is always passed on, and the mirror
runs on shadowdeco's workers after the response, never delaying it.
"""

from __future__ import annotations

import contextlib
import io
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._experiment import Experiment
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

__all__ = ["ShadowWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_SHADOW_ENVIRON_KEY = "HTTP_" + SHADOW_HEADER.upper().replace("-", "_")


class ShadowWSGIMiddleware(Mirror):
    """Mirror sampled requests of a WSGI ``app`` to ``candidate``.

    ``candidate`` is another WSGI app (run in this process, on shadowdeco's workers) or a
    base URL (``"http://host:port/prefix"``).  Options as ``shadow()``'s where they apply
    (``key`` is a callable of the :class:`Request`, recorded to join ground truth later),
    plus ``methods`` (default GET, HEAD, POST), ``max_body`` (request bodies mirrored up to
    this many bytes; larger ones are counted as ``body_too_large``), ``max_response_body``
    (bytes of each response kept for comparison), ``max_pending_bytes`` (the bodies pending
    mirrors may hold at once; past it, ``bytes_full``), ``record_body`` (put bodies in results),
    ``headers`` (the headers results record; default all but credentials), ``deny_headers``
    and ``forward_credentials`` (send Authorization / Cookie to a URL candidate).
    ``.shadow`` is the :class:`~shadowdeco.Experiment`.
    """

    app: WSGIApp

    def __init__(
        self,
        app: WSGIApp,
        candidate: WSGIApp | str,
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
    ) -> None:
        self._setup(
            app,
            candidate,
            WSGICandidate,
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        exp = self.shadow
        method = environ.get("REQUEST_METHOD", "GET").upper()
        # The unsampled path: one attribute, two lookups, then the app as if we were not here.
        if (
            not exp._active
            or method not in self.settings.methods
            or _SHADOW_ENVIRON_KEY in environ  # never mirror a mirror
        ):
            return self.app(environ, start_response)
        if not self._sampled(lambda: _request(environ, method, b"", self.settings)):
            return self.app(environ, start_response)
        try:
            body = _read_body(environ, self.settings.max_body)
        except BaseException:  # a timeout or an interrupt aimed at this request: counted
            exp._drop_sampled("incomplete_body")
            raise
        if isinstance(body, str):  # not mirrored; live gets the very same bytes
            exp._drop_sampled(body)
            return self.app(environ, start_response)
        job = self._admit(_request(environ, method, body, self.settings))
        if job is None:
            return self.app(environ, start_response)
        response = _Response(exp, job, self.settings, start_response)
        try:
            app_iter = self.app(environ, response.start_response)
        except BaseException as exc:
            response.finish(exc)
            raise
        if isinstance(app_iter, (list, tuple)):
            # A complete body already: hand it back as it is, so the server can still
            # compute Content-Length from len() (wsgiref, Django's runserver).
            try:
                for chunk in app_iter:
                    response.body.add(chunk)
            except Exception as exc:  # noqa: BLE001 - not bytes: the server fails on it, not us
                response.finish(exc)
            response.finish(None)
            return app_iter
        if hasattr(type(app_iter), "__len__"):  # the server may look at len() too
            return _SizedClosingIterator(app_iter, response)
        return _ClosingIterator(app_iter, response)


def _request(environ: Environ, method: str, body: bytes, settings: Settings) -> Request:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("content-type", environ["CONTENT_TYPE"]))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("content-length", environ["CONTENT_LENGTH"]))
    # PATH_INFO is bytes decoded as latin-1 (PEP 3333): quote it back into a URL path.
    root = environ.get("SCRIPT_NAME", "")
    path = root + environ.get("PATH_INFO", "")
    try:
        raw = path.encode("latin-1")
    except UnicodeEncodeError:  # not as PEP 3333 says (a lenient server): as UTF-8 then
        raw = path.encode("utf-8", "surrogateescape")
    return Request(
        method,
        urllib.parse.quote(raw, safe="/:@!$&'()*+,;=-._~"),
        environ.get("QUERY_STRING", ""),
        tuple(headers),
        body,
        scheme=environ.get("wsgi.url_scheme", "http"),
        record_body=settings.record_body,
        shown=tuple(settings.chosen(headers)),
        root=root,
    )


def _read_body(environ: Environ, max_body: int) -> bytes | str:
    """Read the request body for mirroring; the live app gets a stream of the same bytes.

    Returns the body, or the reason it is not mirrored (counted as a drop).
    """
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH", "")
    if stream is None:
        return b""
    if length:
        try:
            size = int(length)
        except ValueError:
            return "bad_request"  # untouched: the live app meets the bad header itself
        if size < 0:
            return "bad_request"
        if size > max_body:
            return "body_too_large"  # not read at all
        to_read = size
    elif environ.get("wsgi.input_terminated"):
        to_read = max_body + 1  # chunked: read until EOF, one byte past the cap at most
    else:
        return b""  # no length, not terminated: PEP 3333 says there is no body
    chunks: list[bytes] = []
    got = 0
    try:
        while got < to_read:
            chunk = stream.read(min(65536, to_read - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except Exception:  # noqa: BLE001 - a client gone mid-body: live meets the same error
        environ["wsgi.input"] = _Chained(b"".join(chunks), stream)
        return "incomplete_body"
    data = b"".join(chunks)
    if len(data) > max_body:  # chunked and too large: live reads on past what we took
        environ["wsgi.input"] = _Chained(data, stream)
        return "body_too_large"
    environ["wsgi.input"] = io.BytesIO(data)
    if length and len(data) < to_read:  # fewer bytes than announced: the client went away
        return "incomplete_body"
    return data


class _Chained(io.RawIOBase):
    """The bytes we already read, then the rest of the original stream."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        self._prefix = io.BytesIO(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        data = self._prefix.read(size)
        if size < 0:
            return data + bytes(self._rest.read())
        if len(data) < size:
            data += bytes(self._rest.read(size - len(data)))
        return data

    def readinto(self, buffer: Any) -> int:  # what io's readers (werkzeug) call
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        line = self._prefix.readline(size)
        if line.endswith(b"\n") or (size >= 0 and len(line) >= size):
            return line
        return line + bytes(self._rest.readline(-1 if size < 0 else size - len(line)))


class _Response(LiveResponse):
    """Observes ``start_response`` and the legacy ``write()`` path of the live app."""

    def __init__(
        self, exp: Experiment, job: Job, settings: Settings, start_response: StartResponse
    ) -> None:
        super().__init__(exp, job, settings)
        self._start_response = start_response

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        # The server's checks first (and its re-raise of exc_info once headers were sent).
        if exc_info is None:
            write = self._start_response(status, headers)
        else:
            write = self._start_response(status, headers, exc_info)
        self.status = status  # parsed when the response is complete (finish)
        self.note(lambda: setattr(self, "headers", list(headers)))

        def tee_write(data: bytes) -> Any:  # the legacy write() path, observed too
            try:
                written = write(data)
            except BaseException:  # the client is gone: what it got is no whole response
                self.abandon("incomplete_response")
                raise
            self.note(lambda: self.body.add(data))
            return written

        return tee_write


class _ClosingIterator:
    """The live app's iterable, passed through lazily chunk by chunk; ``close()`` always
    reaches the app's iterable.  The pair goes to the runner when the body is complete (so
    a test client that never closes still gets its mirror), or at ``close()``."""

    def __init__(self, app_iter: Iterable[bytes], response: _Response) -> None:
        self._app_iter = app_iter
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:
            for chunk in self._app_iter:
                try:
                    response.body.add(chunk)
                except Exception as exc:  # noqa: BLE001 - not bytes: the server fails on it, not us
                    response.finish(exc)
                yield chunk
        except GeneratorExit:  # the server stopped early (the client went away): not an error
            raise
        except BaseException as exc:
            response.finish(exc)
            raise
        response.finish(None)

    def close(self) -> None:
        try:
            close = getattr(self._app_iter, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._response.finish(exc)
            raise
        finally:
            # Not finished by now: the client stopped reading mid-response.  A partial body
            # would compare as a false mismatch: count it, don't emit it.
            self._response.abandon("incomplete_response")


class _SizedClosingIterator(_ClosingIterator):
    """:class:`_ClosingIterator` for an iterable with a length, which it keeps."""

    def __len__(self) -> int:
        return len(self._app_iter)  # type: ignore[arg-type]


class WSGICandidate:
    """Runs a WSGI app on the mirrored request, in shadowdeco's worker thread."""

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self._settings = settings

    def __call__(self, request: Request) -> HttpResponse:
        environ = _environ(request)
        state: dict[str, Any] = {}
        collector = BodyCollector(self._settings.max_response_body, head=request.method == "HEAD")

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and collector.length:  # headers sent: as servers do
                raise exc_info[1].with_traceback(exc_info[2])
            state["status"] = int(status.split(" ", 1)[0])
            state["headers"] = list(headers)
            return collector.add

        app_iter = self.app(environ, start_response)
        try:
            for chunk in app_iter:
                collector.add(chunk)
        finally:
            # As for live: what close() raises after the body is the server's to log, not
            # part of the response the client got.
            close = getattr(app_iter, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        return collector.response(state.get("status", 0), state.get("headers", []), self._settings)

    def __repr__(self) -> str:
        return f"WSGICandidate({self.app!r})"

    def __eq__(self, other: object) -> bool:
        # Equal settings make an equal experiment: an app factory may build it twice.
        return (
            isinstance(other, WSGICandidate)
            and self.app is other.app
            and self._settings == other._settings
        )

    def __hash__(self) -> int:
        return hash(id(self.app))


def _environ(request: Request) -> Environ:
    path = urllib.parse.unquote_to_bytes(request.path).decode("latin-1")
    root = request.root if path.startswith(request.root) else ""  # mounted where live was
    environ: Environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": root,
        "PATH_INFO": path[len(root) :],
        "QUERY_STRING": request.query,
        "SERVER_NAME": "shadowdeco",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        _SHADOW_ENVIRON_KEY: "1",
    }
    for key, value in request.headers:
        if key == "content-type":
            environ["CONTENT_TYPE"] = value
        elif key == "content-length":
            continue
        elif key == "host":
            environ["HTTP_HOST"] = value
            environ["SERVER_NAME"] = value.split(":", 1)[0]
        else:
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    environ["CONTENT_LENGTH"] = str(len(request.body))
    return environ
