"""What the WSGI and ASGI middleware share: the captured request, the response summary,
the URL candidate and the options.

A mirrored request is captured once (method, path, query, headers, body up to ``max_body``)
as an immutable :class:`Request`; each arm's answer is summarised as an :class:`HttpResponse`
(status, headers, body digest, the body itself up to a cap for comparison).  Bodies reach the
sinks only with ``record_body=True``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import http.client
import json
import math
import os
import random
import select
import threading
import time
import urllib.parse
import weakref
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from .. import compare as _compare
from .._experiment import Experiment, register
from .._runner import Job, log_failure
from ._client import Response

__all__ = [
    "DEFAULT_METHODS",
    "HttpResponse",
    "LiveResponse",
    "Mirror",
    "Request",
    "Settings",
    "UrlCandidate",
]

DEFAULT_METHODS = frozenset({"GET", "HEAD", "POST"})

# Hop-by-hop headers (RFC 9110 7.6.1) and those http.client sets itself: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: How many bytes a compressed response body may inflate to for comparison; past it (a "zip
#: bomb", or simply a large answer) the body is compared by digest.  The text ``record_body``
#: puts in results is decoded only within the capture cap (``max_response_body``).
DECODED_LIMIT = 16 << 20
#: The Content-Encodings compare_http undoes, and zlib's window bits for each ("deflate" is
#: zlib-wrapped by the standard, raw in some servers: both are tried).
_DECODINGS = {
    "gzip": (16 + zlib.MAX_WBITS,),
    "x-gzip": (16 + zlib.MAX_WBITS,),
    "deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS),
}
CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})
SHADOW_HEADER = "x-shadow-request"


def first_header(
    headers: Iterable[tuple[str, str]], name: str, default: str | None = None
) -> str | None:
    """The first value of header ``name`` in lower-cased ``headers``."""
    name = name.lower()
    return next((value for key, value in headers if key == name), default)


class _Charged:
    """A holder of a body that may be charged to a :class:`ByteBudget`: it gives the bytes
    back when it is freed.  Copies and unpickled objects are not charged (a copy that gave
    them back too would make the budget drift)."""

    __slots__ = ("_charge",)
    _charge: tuple[collections.deque[int], int] | None  # (the budget's deque, bytes) or None

    def __del__(self) -> None:
        ByteBudget.release(getattr(self, "_charge", None))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(getattr(self, "__dict__", {}))
        for cls in type(self).__mro__:  # a subclass's slots too
            slots = cls.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot in ("_charge", "__dict__", "__weakref__"):
                    continue
                private = slot.startswith("__") and not slot.endswith("__")
                name = f"_{cls.__name__.lstrip('_')}{slot}" if private else slot  # mangled
                if hasattr(self, name):
                    state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._charge = None
        for name, value in state.items():
            setattr(self, name, value)


class Request(_Charged):
    """A mirrored request, captured before the live app saw it."""

    __slots__ = (
        "body",
        "headers",
        "method",
        "path",
        "query",
        "record_body",
        "root",
        "root_in_path",
        "scheme",
        "shown",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        scheme: str = "http",
        record_body: bool = False,
        shown: tuple[tuple[str, str], ...] = (),
        root: str = "",
        root_in_path: bool = True,
    ) -> None:
        self._charge = None  # see ByteBudget
        self.method = method
        self.path = path
        #: where the app is mounted (WSGI ``SCRIPT_NAME``, ASGI ``root_path``), unquoted, as
        #: the server gave it (``path``, unquoted, begins with it); an in-process candidate is
        #: mounted there too
        self.root = root
        #: ASGI: the live scope's ``path`` held the root (uvicorn, Starlette's Mount) or not
        self.root_in_path = root_in_path
        self.query = query
        #: lower-case names, in order; repeated headers stay repeated
        self.headers = headers
        self.body = body
        self.scheme = scheme
        self.record_body = record_body
        self.shown = shown  # the headers results record (the allow list, no credentials)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        return first_header(self.headers, name, default)

    def to_dict(self) -> dict[str, Any]:
        """What the result records of the request (``inputs``): no body unless asked."""
        out: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(h) for h in self.shown],
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "body_len": len(self.body),
        }
        if self.record_body:
            out["body"] = _text(self.body)
        return out

    def __repr__(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"<Request {self.method} {self.path}{query} ({len(self.body)} bytes)>"


class HttpResponse(_Charged):
    """One arm's answer: status, chosen headers, a digest of the body and, capped, the body.

    ``encoding`` is its ``Content-Encoding`` (lower case; ``""`` for none), kept even when
    ``headers`` leaves the header out; None takes it from ``headers``.  ``cap`` is the
    capture cap: the ``record_body`` text is decoded only if it fits in it.
    """

    __slots__ = (
        "body",
        "body_len",
        "body_sha256",
        "cap",
        "encoding",
        "headers",
        "record_body",
        "status",
        "truncated",
    )

    def __init__(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        body_len: int,
        body_sha256: str,
        truncated: bool,
        record_body: bool,
        encoding: str | None = None,
        cap: int = DECODED_LIMIT,
    ) -> None:
        self._charge = None  # see ByteBudget
        self.status = status
        self.headers = tuple((k.lower(), v) for k, v in headers)
        if encoding is None:
            encoding = self.header("content-encoding", "")
        # Not a string: a lenient server let the app send it; it is no encoding we undo.
        self.encoding = encoding.strip().lower() if isinstance(encoding, str) else "?"
        self.cap = cap
        self.body = body  # up to the cap, for comparison
        self.body_len = body_len
        self.body_sha256 = body_sha256
        self.truncated = truncated
        self.record_body = record_body

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        return first_header(self.headers, name, default)

    def content(self, limit: int = DECODED_LIMIT) -> bytes:
        """The body as the app made it: a gzip or deflate ``Content-Encoding`` undone.

        Raises ValueError when that cannot be trusted: the body was cut at the capture cap,
        the encoding is another one, the stream is corrupt, incomplete or followed by other
        bytes, or it would inflate past ``limit`` bytes.
        """
        if self.truncated:
            raise ValueError("body truncated at the capture cap")
        encoding = self.encoding
        if encoding in ("", "identity"):
            return self.body
        if encoding not in _DECODINGS:
            raise ValueError(f"cannot decode Content-Encoding {encoding!r}")
        for wbits in _DECODINGS[encoding]:
            try:
                return _inflate(self.body, wbits, limit, members=encoding != "deflate")
            except zlib.error:
                continue
        raise ValueError(f"body is not a whole {encoding} stream")

    def json(self) -> Any:
        """The body (decoded, see :meth:`content`) parsed as JSON, or raise ValueError (not
        JSON, cut at the cap, or not decodable)."""
        return json.loads(self.content())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "headers": [list(h) for h in self.headers],
            "body_sha256": self.body_sha256,
            "body_len": self.body_len,
        }
        if self.record_body:
            try:
                body = self.content(self.cap)  # within the cap, as any recorded body
            except ValueError:  # cut, too large or not to be undone: as it was sent
                body = self.body
            out["body"] = _text(body)
            out["body_truncated"] = self.truncated
        return out

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} ({self.body_len} bytes)>"


def _inflate(data: bytes, wbits: int, limit: int, *, members: bool) -> bytes:
    """``data`` inflated: one stream, or (``members``: gzip) one member after another, as a
    client reads them.  zlib.error if it is not whole; ValueError past ``limit`` bytes."""
    out: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        # One byte more than the room left: never 0 (no limit, to zlib), and shows passing it.
        chunk = inflater.decompress(data, limit - size + 1)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"body inflates past {limit} bytes")
        if not inflater.eof:
            raise zlib.error("incomplete stream")
        out.append(chunk)
        data = inflater.unused_data
        if not data:
            return b"".join(out)
        if not members:
            raise zlib.error("data after the stream")


def _str(value: Any) -> str:
    """A header name or value as text: an ASGI app sends bytes (latin-1)."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


class BodyCollector:
    """Collects a response body as it streams: full digest, bytes up to ``cap``.

    The response to a HEAD request (``head``) has no body, whatever the app produced: the
    server drops it, and the client gets none (nor from a URL candidate).
    """

    __slots__ = ("_digest", "cap", "chunks", "head", "kept", "length")

    def __init__(self, cap: int, *, head: bool = False) -> None:
        self.cap = cap
        self.head = head
        self.chunks: list[bytes] = []
        self.kept = 0
        self.length = 0
        self._digest = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        if self.head:
            return
        self.length += len(chunk)
        self._digest.update(chunk)
        if self.kept < self.cap:
            piece = chunk[: self.cap - self.kept]
            self.chunks.append(piece)
            self.kept += len(piece)

    def response(
        self, status: int, headers: Iterable[tuple[str, str]], settings: Settings
    ) -> HttpResponse:
        headers = [(key.lower(), value) for key, value in headers]
        response = HttpResponse(
            status,
            settings.chosen(headers),
            b"".join(self.chunks),
            body_len=self.length,
            body_sha256=self._digest.hexdigest(),
            truncated=self.length > self.kept,
            record_body=settings.record_body,
            encoding=first_header(headers, "content-encoding", ""),
            cap=self.cap,
        )
        settings.budget.charge(response, self.kept)
        return response


class ByteBudget:
    """The bytes of request and response bodies that one middleware's mirrors hold, against
    ``max_pending_bytes``: while queued or running, and as results until every sink has let
    them go (a sink that keeps results, such as ``Memory``, keeps their bytes counted).

    Each :class:`Request` and :class:`HttpResponse` with a body is charged its body's length
    and gives it back when it is freed.  Charges and returns from any thread are appended to
    a deque (atomic, no lock); they are folded into :attr:`held` under a lock that background
    threads never take: the live path, deciding whether a request's body still fits, and a
    reader of ``pending_bytes``.  A response is charged when it is complete, so responses
    still streaming (at most one per live request being served, and one per running
    candidate) are outside the count.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._start()
        _budgets.add(self)

    def _start(self) -> None:
        """Empty: at construction, and in a forked child, where the parent's mirrors are
        counted as ``fork`` (their charges go to the deque left behind) and the lock may
        have been held by a parent thread."""
        self._held = 0  # folded; under _lock
        self._changes: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes held now (a moment's view)."""
        with self._lock:
            return self._fold_locked()

    def _fold_locked(self) -> int:
        changes = self._changes
        held = self._held
        while changes:
            held += changes.popleft()
        self._held = held
        return held

    def reserve(self, request: Request) -> bool:
        """Charge ``request``'s body if it fits in the budget (live path); False if not."""
        size = len(request.body)
        with self._lock:
            # A request without a body still has its live response kept: it needs room too.
            if self._fold_locked() + max(size, 1) > self.limit:
                return False
            self._held += size
        if size:
            request._charge = (self._changes, size)
        return True

    def charge(self, response: HttpResponse, size: int) -> None:
        """Charge a complete response's kept body (any thread: it may not be refused)."""
        if size:
            self._changes.append(size)
            response._charge = (self._changes, size)

    @staticmethod
    def release(charge: tuple[collections.deque[int], int] | None) -> None:
        """Give back what a freed body holder was charged."""
        if charge is not None:
            charge[0].append(-charge[1])


_budgets: weakref.WeakSet[ByteBudget] = weakref.WeakSet()
#: The budget of each middleware experiment: middlewares that share one share it too.
_experiment_budgets: weakref.WeakKeyDictionary[Experiment, ByteBudget] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    for budget in list(_budgets):
        budget._start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LiveResponse:
    """Watches one live response go by and hands the finished pair to the runner exactly
    once: :meth:`finish` when the response is complete (or failed), :meth:`abandon` when
    the client went away before it was."""

    def __init__(
        self,
        exp: Experiment,
        job: Job,
        settings: Settings,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._exp = exp
        self._job = job
        self._settings = settings
        self._loop = loop
        self.status: int | str = 0  # a WSGI status line is parsed in finish()
        self.headers: list[tuple[Any, Any]] = []  # str pairs, or an ASGI app's bytes
        head = job.args[0].method == "HEAD"  # the mirrored Request is the one argument
        self.body = BodyCollector(settings.max_response_body, head=head)
        self._finished = False

    def request_ready(self) -> str | None:
        """Whether the mirrored request is whole (ASGI reads its body as live does): None,
        or the reason it is not mirrored."""
        return None

    def finish(self, error: BaseException | None = None) -> None:
        if self._finished:
            return
        try:  # on the live path: nothing of ours may reach the caller
            reason = self.request_ready()
        except Exception:  # noqa: BLE001 - a bug of ours
            self._failed()
            return
        if reason is not None:
            self.abandon(reason)
            return
        self._finished = True
        if error is not None:
            self._exp._submit(self._job, None, error, self._loop)
            return
        try:  # on the live path: whatever the app sent, nothing of ours may reach the caller
            status = self.status
            if isinstance(status, str):  # "200 OK"
                status = int(status.split(" ", 1)[0])
            headers = [(_str(key), _str(value)) for key, value in self.headers]
            response = self.body.response(status, headers, self._settings)
        except Exception:  # noqa: BLE001 - e.g. a header name that is not a string
            self._failed()
            return
        self._exp._submit(self._job, response, None, self._loop)

    def note(self, bookkeeping: Callable[[], None]) -> None:
        """Run our bookkeeping of what the app sent, after the server took it: if it fails
        (a lenient server took what the spec does not allow), the caller never knows."""
        try:
            bookkeeping()
        except Exception:  # noqa: BLE001 - e.g. a body chunk that is not bytes
            if not self._finished:
                self._failed()

    def _failed(self) -> None:
        """Our summary of the live response failed: not shadowed, counted."""
        self._finished = True
        log_failure("summarising the live response (not shadowed)", self._exp.name)
        self._exp._abandon(self._job, "internal_error")

    def abandon(self, reason: str) -> None:
        if not self._finished:
            self._finished = True
            self._exp._abandon(self._job, reason)


# --------------------------------------------------------------------------------------------
# Comparison


#: Headers that differ between any two responses: never compared.
VOLATILE_HEADERS = frozenset(
    {
        "date",
        "server",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "set-cookie",
        "etag",
        "last-modified",
        "age",
        "expires",
        "x-request-id",
        "x-correlation-id",
        "x-runtime",
        "x-response-time",
        "server-timing",
        "via",
    }
)


class CompareHttp:
    """Compares two :class:`HttpResponse`: status, JSON-aware body, non-volatile headers.

    ``ignore`` holds dotted paths removed from JSON bodies first (request ids, timestamps);
    bodies that are not JSON compare by digest.  ``headers=False`` compares no headers.
    """

    __slots__ = ("_body", "_paths", "headers", "ignore_headers")

    def __init__(
        self,
        *,
        ignore: Iterable[str] = (),
        headers: bool = True,
        ignore_headers: Iterable[str] = (),
    ) -> None:
        paths = tuple(ignore)
        self._paths = paths
        self._body: Callable[[Any, Any], Any] = _compare.ignore(*paths) if paths else _compare.equal
        self.headers = headers
        self.ignore_headers = VOLATILE_HEADERS | {h.lower() for h in ignore_headers}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompareHttp) and (
            self._paths,
            self.headers,
            self.ignore_headers,
        ) == (other._paths, other.headers, other.ignore_headers)

    def __hash__(self) -> int:
        return hash((self._paths, self.headers))

    def __call__(self, live: Any, candidate: Any) -> bool:
        if not isinstance(live, HttpResponse) or not isinstance(candidate, HttpResponse):
            return bool(_compare.equal(live, candidate))
        if live.status != candidate.status:
            return False
        if self.headers and self._headers(live) != self._headers(candidate):
            return False
        if live.body_sha256 == candidate.body_sha256:
            return True
        try:
            live_body, candidate_body = live.content(), candidate.content()
        except ValueError:  # cut at the cap, or an encoding not to be undone: digests differ
            return False
        if live_body == candidate_body:  # compressed differently (a gzip timestamp)
            return True
        try:
            return bool(self._body(json.loads(live_body), json.loads(candidate_body)))
        except ValueError:  # not JSON: the bodies differ, so no match
            return False

    def _headers(self, response: HttpResponse) -> list[tuple[str, str]]:
        return sorted(h for h in response.headers if h[0] not in self.ignore_headers)

    def __repr__(self) -> str:
        return f"compare_http(headers={self.headers})"


def compare_http(
    *, ignore: Iterable[str] = (), headers: bool = True, ignore_headers: Iterable[str] = ()
) -> CompareHttp:
    """The middleware's default comparator; ``ignore`` paths for JSON bodies."""
    return CompareHttp(ignore=ignore, headers=headers, ignore_headers=ignore_headers)


# --------------------------------------------------------------------------------------------
# Options


class Settings:
    """The middleware's own options, checked at construction."""

    def __init__(
        self,
        *,
        methods: Iterable[str],
        max_body: int,
        max_response_body: int,
        max_pending_bytes: int,
        record_body: bool,
        headers: Iterable[str] | None,
        deny_headers: Iterable[str],
        forward_credentials: bool,
    ) -> None:
        self.methods = frozenset(m.upper() for m in _strings("methods", methods, "HTTP methods"))
        if not self.methods or not all(m.isalpha() for m in self.methods):
            raise ValueError(f"methods must name HTTP methods, got {methods!r}")
        for param, value in (
            ("max_body", max_body),
            ("max_response_body", max_response_body),
            ("max_pending_bytes", max_pending_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{param} must be an int of bytes >= 0, got {value!r}")
        self.max_body = max_body
        self.max_response_body = max_response_body
        self.max_pending_bytes = max_pending_bytes
        #: the bodies this middleware's mirrors hold, against max_pending_bytes
        self.budget = ByteBudget(max_pending_bytes)
        if not isinstance(record_body, bool):
            raise TypeError(f"record_body must be a bool, got {record_body!r}")
        self.record_body = record_body
        if not isinstance(forward_credentials, bool):
            raise TypeError(f"forward_credentials must be a bool, got {forward_credentials!r}")
        self.forward_credentials = forward_credentials
        #: headers recorded on results (None: all but credentials)
        self.headers = None if headers is None else _names("headers", headers)
        #: never sent to a URL candidate, whatever forward_credentials says
        self.withheld = _names("deny_headers", deny_headers)
        # Never recorded: those, credentials, and the cookies a response sets.
        self.deny_headers = self.withheld | CREDENTIALS | {"set-cookie"}

    def _key(self) -> tuple[Any, ...]:
        return (
            self.methods,
            self.max_body,
            self.max_response_body,
            self.max_pending_bytes,
            self.record_body,
            self.forward_credentials,
            self.headers,
            self.deny_headers,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def chosen(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers a result records: the allow list, never credentials."""
        out = []
        for key, value in headers:
            name = key.lower()
            if name in self.deny_headers:
                continue
            if self.headers is None or name in self.headers:
                out.append((name, value))
        return out

    def forwarded(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The request headers sent to a URL candidate."""
        headers = list(headers)
        # Headers the request names in Connection are hop-by-hop too (RFC 9110 7.6.1).
        listed = {
            token.strip().lower()
            for key, value in headers
            if key.lower() == "connection"
            for token in value.split(",")
        }
        out = []
        for key, value in headers:
            name = key.lower()
            if name in _HOP_BY_HOP or name in listed or name == SHADOW_HEADER:
                continue
            if name in self.withheld or (name in CREDENTIALS and not self.forward_credentials):
                continue
            out.append((name, value))
        out.append((SHADOW_HEADER, "1"))
        return out


def _strings(param: str, values: object, what: str) -> list[str]:
    """``values`` as a list of strings, or a TypeError naming ``param``: a string alone, a
    non-iterable or an item that is not a string is not a collection of ``what``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{param} must be a collection of {what}, got {values!r}")
    out = list(values)
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{param} must hold {what} as strings, got {values!r}")
    return out


def _names(param: str, names: Iterable[str]) -> frozenset[str]:
    out = frozenset(n.lower() for n in _strings(param, names, "header names"))
    if not all(out):
        raise ValueError(f"{param} must hold non-empty header names, got {names!r}")
    return out


def make_experiment(
    app: object,
    candidate: Callable[..., Any],
    *,
    name: str | None,
    options: dict[str, Any],
    settings: Settings,
) -> Experiment:
    """The middleware's experiment: requests are its inputs, responses its values."""
    if not callable(app):
        raise TypeError(f"app must be a WSGI/ASGI application, got {app!r}")
    compare = options.pop("compare", None)
    if name is None:  # like the decorator: the app's module-qualified name
        owner = app if hasattr(app, "__qualname__") else type(app)
        name = f"{owner.__module__}.{owner.__qualname__}"
        # A bound method (Flask's app.wsgi_app): tell apps apart by their own name.
        app_name = getattr(getattr(app, "__self__", None), "name", None)
        if isinstance(app_name, str) and app_name:
            name = f"{name}[{app_name}]"
    exp = Experiment(
        name,
        candidate,
        compare=compare_http() if compare is None else compare,
        copy_inputs=False,  # a Request is immutable: bytes and tuples
        record_inputs=True,
        **options,
    )
    exp._record_of = _request_summary
    return register(exp)


def _request_summary(
    exp: Experiment, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What a result records of a mirrored request: its summary (:meth:`Request.to_dict`),
    not the :class:`Request`, which holds every header, credentials included, and the body.
    Made once, when the mirror starts; nothing is copied (a Request is immutable)."""
    return {"args": [request.to_dict() for request in args], "kwargs": {}}


# --------------------------------------------------------------------------------------------
# A candidate served elsewhere


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _stale(conn: http.client.HTTPConnection) -> bool:
    """A kept-alive socket the server has closed (or written to) since: not reusable.

    Checked before each reuse, as urllib3 does, so a POST is not lost to an idle timeout.
    """
    sock = conn.sock
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):  # select() cannot take descriptors past 1023
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


#: A kept-alive connection idle this long (seconds) is not reused: a new one is opened.
#: Servers close idle connections after a while without telling (gunicorn's after 2 s,
#: uvicorn's and Node's after 5 s).  :func:`_stale` sees a close that came before the reuse,
#: not one that crosses it: the request is then sent as the server closes, and a POST is lost
#: (never sent twice: it may have reached the server).  Under the usual timeouts, the race
#: is not run, for at most one new connection a second per worker thread.
KEEPALIVE_IDLE = 1.0


class _Held:
    """A worker thread's keep-alive connection, closed when the thread (its local) goes."""

    __slots__ = ("conn", "used")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.used = time.monotonic()  # opened, then: its last response read

    def __del__(self) -> None:
        self.conn.close()


class UrlCandidate:
    """Sends the mirrored request to ``base_url`` with ``http.client``; one keep-alive
    connection per worker thread, ``timeout`` seconds per request."""

    #: equal by URL and settings, and small: an experiment remembers it as it is (the same
    #: middleware made again, by an app factory, still shares its experiment)
    compared_by_value = True

    def __init__(self, base_url: str, settings: Settings, timeout: float | None) -> None:
        shape = f"candidate URL must be http(s)://host[:port][/base], got {base_url!r}"
        try:
            parts = urllib.parse.urlsplit(base_url)
            port = parts.port  # checked here: a bad port raises on first access
        except ValueError as exc:  # "[::1", ":notaport", ":99999"
            raise ValueError(f"{shape} ({exc})") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(shape)
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._base = parts.path.rstrip("/")
        self._settings = settings
        self._timeout = timeout if timeout is not None and math.isfinite(timeout) else None
        self._local = threading.local()

    def __eq__(self, other: object) -> bool:
        # Equal settings make an equal experiment: an app factory may build it twice.
        return isinstance(other, UrlCandidate) and (
            self.base_url,
            self._settings,
            self._timeout,
        ) == (other.base_url, other._settings, other._timeout)

    def __hash__(self) -> int:
        return hash((self.base_url, self._timeout))

    def _connection(self) -> http.client.HTTPConnection:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and (
            time.monotonic() - held.used >= KEEPALIVE_IDLE or _stale(held.conn)
        ):
            self._drop_connection()
            held = None
        if held is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            conn.response_class = Response  # http.client's, with a lighter header parser
            held = self._local.held = _Held(conn)
        return held.conn

    def __call__(self, request: Request) -> HttpResponse:
        target = self._base + request.path + (f"?{request.query}" if request.query else "")
        headers = self._settings.forwarded(request.headers)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.putrequest(request.method, target, skip_accept_encoding=True)
                for key, value in headers:
                    conn.putheader(key, value)
                if request.body or request.method in {"POST", "PUT", "PATCH"}:
                    conn.putheader("content-length", str(len(request.body)))
                conn.endheaders(request.body or None)
                response = conn.getresponse()
                collector = BodyCollector(self._settings.max_response_body)
                while chunk := response.read(65536):
                    collector.add(chunk)
                if response.will_close:
                    self._drop_connection()
                else:
                    self._local.held.used = time.monotonic()
                return collector.response(response.status, response.getheaders(), self._settings)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                # A kept-alive connection the server closed meanwhile: retry once, on a fresh
                # one, and only requests that are safe to send twice.
                if attempt == 2 or not reused or request.method not in _IDEMPOTENT:
                    raise
            except BaseException:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop_connection(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            held.conn.close()

    def __repr__(self) -> str:
        return f"UrlCandidate({self.base_url!r})"


class Mirror:
    """What the WSGI and ASGI middleware share: options, candidate, experiment, sampling."""

    app: Any
    settings: Settings
    shadow: Experiment

    def _setup(
        self,
        app: Any,
        candidate: Any,
        in_process: Callable[[Any, Settings], Callable[[Request], Any]],
        *,
        name: str | None,
        timeout: float | None,
        methods: Iterable[str],
        max_body: int,
        max_response_body: int,
        max_pending_bytes: int,
        record_body: bool,
        headers: Iterable[str] | None,
        deny_headers: Iterable[str],
        forward_credentials: bool,
        **options: Any,
    ) -> None:
        self.app = app
        self.settings = Settings(
            methods=methods,
            max_body=max_body,
            max_response_body=max_response_body,
            max_pending_bytes=max_pending_bytes,
            record_body=record_body,
            headers=headers,
            deny_headers=deny_headers,
            forward_credentials=forward_credentials,
        )
        kind = type(self).__name__.removeprefix("Shadow").removesuffix("Middleware")

        def make_candidate(candidate: Any, timeout: float | None) -> Callable[[Request], Any]:
            """What runs a mirror: a base URL or an app, here and when swapped later."""
            if isinstance(candidate, UrlCandidate) or type(candidate) is in_process:
                return candidate  # type: ignore[no-any-return]  # the getter's value, set back
            if isinstance(candidate, str):
                return UrlCandidate(candidate, self.settings, timeout)
            if callable(candidate):
                return in_process(candidate, self.settings)
            raise TypeError(f"candidate must be a {kind} app or a base URL, got {candidate!r}")

        exp = self.shadow = make_experiment(
            app,
            make_candidate(candidate, timeout),
            name=name,
            settings=self.settings,
            options={"timeout": timeout, **options},
        )
        exp._make_candidate = lambda value: make_candidate(value, exp.timeout)
        # One bound per experiment: an app factory's second middleware of the same name
        # admits against the budget its shared candidate charges.
        self.settings.budget = _experiment_budgets.setdefault(exp, self.settings.budget)

    @property
    def pending_bytes(self) -> int:
        """Bytes of request and response bodies that this middleware's mirrors hold now,
        queued, running or as results a sink still keeps (see ``max_pending_bytes``)."""
        return self.settings.budget.held

    def _admit(self, request: Request) -> Job | None:
        """Admit a sampled request whose body was read, if its body fits in
        ``max_pending_bytes`` (else counted as ``bytes_full``) and a place is free."""
        exp = self.shadow
        if not self.settings.budget.reserve(request):
            exp._drop_sampled("bytes_full")
            return None
        return exp._admit(None, (request,), {})

    def _sampled(self, head: Callable[[], Request]) -> bool:
        """Is this request sampled?  A plain rate is decided before anything is built;
        other samplers get the request's head (``body`` is still empty then)."""
        exp = self.shadow
        rate = exp._rate
        if rate is None:
            return exp._sampled_by_sampler((head(),), {})
        if rate < 1.0 and (rate <= 0.0 or random.random() >= rate):
            next(exp._skipped)
            return False
        return True
