"""The URL candidate's response parsing (``middleware._client.Response``) against the standard
library's: the same bytes give the same status, headers, framing and body."""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdeco.middleware._client import Response


class _Wire:
    """What ``HTTPResponse`` reads from: a socket whose ``makefile`` gives the raw bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))  # type: ignore[arg-type]


def _read(cls: type[http.client.HTTPResponse], data: bytes, method: str) -> dict[str, Any]:
    response = cls(_Wire(data), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
    except Exception as exc:  # the type is what is compared
        return {"error": type(exc).__name__}
    seen = {
        "status": response.status,
        "reason": response.reason,
        "version": response.version,
        "headers": response.getheaders(),
        "will_close": response.will_close,
        "chunked": response.chunked,
        "length": response.length,
        "content-type": response.getheader("Content-Type"),
        "set-cookie": response.getheader("set-cookie"),
    }
    try:
        seen["body"] = response.read()
    except http.client.HTTPException as exc:
        seen["body"] = type(exc).__name__
    return seen


def _both(data: bytes, method: str = "GET") -> tuple[dict[str, Any], dict[str, Any]]:
    return _read(Response, data, method), _read(http.client.HTTPResponse, data, method)


OK = b"HTTP/1.1 200 OK\r\n"
EMPTY = b"Content-Length: 0\r\n\r\n"  # the end of a header block, and no body
CASES = {
    "content-length": OK + b"Content-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "chunked": OK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "close-delimited": OK + b"Content-Type: text/plain\r\n\r\nuntil the end",
    "connection close": OK + b"Connection: close\r\nContent-Length: 2\r\n\r\nok",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n" + EMPTY,
    "http/1.0 keep-alive header": b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\n" + EMPTY,
    "proxy-connection": b"HTTP/1.0 200 OK\r\nProxy-Connection: keep-alive\r\n" + EMPTY,
    "100 continue": b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
    "204": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    "bad length": OK + b"Content-Length: nope\r\n\r\nbody",
    "negative length": OK + b"Content-Length: -3\r\n\r\nbody",
    "chunked wins": OK + b"Content-Length: 99\r\nTransfer-Encoding: Chunked\r\n\r\n"
    b"1\r\na\r\n0\r\n\r\n",
    "repeated": OK + b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n" + EMPTY,
    "folded": OK + b"X-Long: one\r\n  two\r\n\tthree\r\n" + EMPTY,
    "spaces": OK + b"X-A:   padded  \r\nX-B:\r\n" + EMPTY,
    "bare lf": b"HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nok",
    "lone cr": OK + b"X-A: 1\rX-B: 2\r\n" + EMPTY,
    "no reason": b"HTTP/1.1 200\r\n" + EMPTY,
    "latin-1": OK + b"X-Name: caf\xe9\r\n" + EMPTY,
    "not a header": OK + b"X-A: 1\r\nnot a header\r\nX-B: 2\r\n" + EMPTY,
    "space in name": OK + b"X A: 1\r\n" + EMPTY,
    "leading fold": OK + b"  folded first\r\n" + EMPTY,
    "envelope lines": OK + b"From a\r\nX-A: 1\r\nFrom b\r\n c\r\nX-B: 2\r\nFrom c\r\n\r\n",
    "empty name": OK + b": empty\r\n" + EMPTY,
    "bad status": b"HTTP/1.1 abc OK\r\n\r\n",
    "bad version": b"SPDY/3 200 OK\r\n\r\n",
    "empty": b"",
    "too many headers": OK + b"X-A: 1\r\n" * 101 + b"\r\n",
    "99 headers": OK + b"X-A: 1\r\n" * 99 + b"\r\n",
    "long line": OK + b"X-A: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_http_client(name: str) -> None:
    ours, stock = _both(CASES[name])
    assert ours == stock


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Type: multipart/mixed; boundary*=a; boundary*0=b\r\n",  # TypeError
        b"Content-Type: multipart/mixed; boundary*=idna''abc\r\n",  # UnicodeError
        b"Content-Type:message/rfc822\r\r" * 990 + b"\r\n",  # RecursionError, one per level
    ],
)
def test_headers_email_would_fail_on_are_read(header: bytes) -> None:
    """Where email raises while it parses the block as a message (a multipart boundary it
    cannot decode, message/ nested a thousand deep), the headers are read as they are."""
    ours, stock = _both(OK + header + b"Content-Length: 2\r\n\r\nok")
    assert "error" in stock
    assert ours["status"] == 200
    assert ours["headers"][0][0] == "Content-Type"


@pytest.mark.parametrize("status", [b"200 OK", b"204 No Content", b"404 Not Found"])
def test_head_has_no_body(status: bytes) -> None:
    data = b"HTTP/1.1 " + status + b"\r\nContent-Length: 12\r\n\r\n"
    ours, stock = _both(data, method="HEAD")
    assert ours == stock
    assert ours["length"] == 0


_name = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_0123456789 ", min_size=0, max_size=12)
_value = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)
_line = st.one_of(
    st.tuples(_name, _value).map(lambda nv: f"{nv[0]}:{nv[1]}"),  # a header (or not: a space)
    _value.map(lambda v: " " + v),  # a continuation
    _value.map(lambda v: "\t" + v),
    _value,  # anything
    st.sampled_from(
        [
            "Content-Length: 3",
            "Transfer-Encoding: chunked",
            "Connection: close",
            "Connection: keep-alive",
            "Keep-Alive: 5",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    status=st.sampled_from(["200 OK", "204 No Content", "301 Moved", "500 Oops"]),
    lines=st.lists(_line, max_size=8),
    body=st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n"]),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
)
def test_any_header_block_same_as_http_client(
    version: str, status: str, lines: list[str], body: bytes, method: str
) -> None:
    lines = [line for line in lines if line.strip() and "\r" not in line and "\n" not in line]
    head = f"{version} {status}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    ours, stock = _both(head.encode("latin-1") + body, method=method)
    assert ours == stock
