"""Building blocks for the middleware tests: a recording candidate server, hand-made WSGI
environs and a WSGI "server" call, hand-made ASGI scopes and a scripted ASGI client."""

from __future__ import annotations

import dataclasses
import io
import threading
import wsgiref.util
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# --------------------------------------------------------------------------------------------
# A candidate served elsewhere: a real HTTP server on 127.0.0.1 that records what it got


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the candidate server received it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, in order
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def names(self) -> set[str]:
        return {key for key, _ in self.headers}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real candidate service would
    timeout = 10  # a kept-alive connection nobody closes ends its thread after a while
    server: CandidateServer

    def setup(self) -> None:
        super().setup()
        self.server.connection_opened()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = tuple((key.lower(), value) for key, value in self.headers.items())
        self.server.record(Seen(self.command, path, query, headers, body))
        if path.endswith("/hang"):
            self.server.gate.wait(10)
        status, reply_headers, payload = self.server.reply
        self.send_response(status)
        for key, value in reply_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        if self.server.close_each:
            # Close without saying so (no "Connection: close"): the client's next request
            # on this connection meets a closed socket.
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what was recorded instead."""


class CandidateServer(ThreadingHTTPServer):
    """A candidate service on 127.0.0.1 (port 0) that records every request it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.reply: tuple[int, list[tuple[str, str]], bytes] = (
            200,
            [("Content-Type", "application/json")],
            b'{"ok": true}',
        )
        self.close_each = False
        self.gate = threading.Event()  # what "/hang" waits for
        self._cond = threading.Condition()
        self._seen: list[Seen] = []
        self._connections = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that timed out and left is part of some tests."""

    def connection_opened(self) -> None:
        with self._cond:
            self._connections += 1

    def record(self, seen: Seen) -> None:
        with self._cond:
            self._seen.append(seen)
            self._cond.notify_all()

    @property
    def connections(self) -> int:
        with self._cond:
            return self._connections

    @property
    def seen(self) -> list[Seen]:
        with self._cond:
            return list(self._seen)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Seen]:
        """Wait until ``n`` requests arrived (or ``timeout`` passed); returns them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._seen) >= n, timeout)
            return list(self._seen)


# --------------------------------------------------------------------------------------------
# WSGI: environs, request streams and a server's side of a call


class Stream:
    """A ``wsgi.input``: counts the bytes taken and fails on reading past ``fail_after``
    bytes, as a socket does when the client goes away mid-body."""

    def __init__(self, data: bytes, *, fail_after: int | None = None) -> None:
        self._data = io.BytesIO(data)
        self._fail_after = fail_after
        self.taken = 0

    def _limit(self, size: int) -> int:
        # Like a buffered socket: a read that would cross the failure point raises.
        if self._fail_after is not None and (size < 0 or self.taken + size > self._fail_after):
            raise OSError("client went away")
        return size

    def read(self, size: int | None = -1) -> bytes:
        data = self._data.read(self._limit(-1 if size is None else size))
        self.taken += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._data.readline(self._limit(-1 if size is None else size))
        self.taken += len(data)
        return data


def make_environ(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    chunked: bool = False,
    content_length: str | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    """A server's environ: Content-Length unless ``chunked`` (``wsgi.input_terminated``)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": Stream(body) if stream is None else stream,
    }
    wsgiref.util.setup_testing_defaults(environ)
    if chunked:
        environ["wsgi.input_terminated"] = True
    elif content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    elif body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for key, value in headers:
        if key.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ


@dataclasses.dataclass
class WsgiCall:
    """What a WSGI server saw of one call: status, headers, every chunk (write() and
    iterable, in order)."""

    status: str = ""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    chunks: list[bytes] = dataclasses.field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def call_wsgi(
    app: Callable[..., Any], environ: dict[str, Any], *, stop_after: int = -1
) -> WsgiCall:
    """Call ``app`` as a server does, ``close()`` included; stop after ``stop_after`` chunks
    of the iterable when given (a client that went away)."""
    call = WsgiCall()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        call.status = status
        call.headers = list(headers)
        return call.chunks.append  # the legacy write()

    result = app(environ, start_response)
    try:
        for n, chunk in enumerate(result, 1):
            call.chunks.append(chunk)
            if n == stop_after:
                break
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return call


def read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body the way header X-Read asks: ``read``, ``read-n`` (a loop of
    small reads) or ``readline`` (a loop of lines)."""
    stream = environ["wsgi.input"]
    how = environ.get("HTTP_X_READ", "read")
    length = environ.get("CONTENT_LENGTH")
    if how == "read":
        return bytes(stream.read(int(length)) if length else stream.read())
    parts = []
    while True:
        part = stream.read(1000) if how == "read-n" else stream.readline()
        if not part:
            return b"".join(parts)
        parts.append(part)


# --------------------------------------------------------------------------------------------
# ASGI: scopes and a scripted client


def http_scope(
    method: str = "GET",
    path: str = "/",
    query: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """An HTTP scope as a server builds it (lower-case header names, raw_path)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def body_messages(*chunks: bytes) -> list[dict[str, Any]]:
    """``http.request`` messages, ``more_body`` on all but the last."""
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


class AsgiClient:
    """The server's side of one ASGI call: hands out ``incoming`` in order (then
    ``http.disconnect``), records every message sent and every message handed out."""

    def __init__(self, incoming: Iterable[dict[str, Any]] = ()) -> None:
        self._incoming = list(incoming)
        self.handed: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.on_send: Callable[[dict[str, Any]], None] | None = None

    async def receive(self) -> dict[str, Any]:
        message = self._incoming.pop(0) if self._incoming else {"type": "http.disconnect"}
        self.handed.append(message)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if self.on_send is not None:
            self.on_send(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
