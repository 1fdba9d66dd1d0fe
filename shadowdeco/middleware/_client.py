"""The URL candidate's responses: ``http.client``'s, with a lighter header parser.

``http.client.HTTPResponse`` hands the header block to the ``email`` package, which builds a
message object line by line: about half the CPU a kept-alive request costs the client, and the
live server pays it on every mirror.  :class:`Response` reads the same lines and keeps them
as ``(name, value)`` pairs, with ``email``'s rules (a folded line continues the header
before it, a line that is not a header ends the block, a ``From `` line or an empty name is
skipped, values lose their leading blanks and line end), so status, headers, framing and body
are exactly the standard library's (``tests/test_http_client.py`` holds them side by side).
Everything else (the status line, chunked and length-delimited bodies, keep-alive) is
``http.client``'s own.  One difference, on purpose: ``email`` goes on to parse the block as a
message, and raises on a ``multipart`` boundary parameter it cannot decode or ``message/``
types nested a thousand deep; here such headers are read as they are, and the candidate's
answer is compared like any other.
"""

from __future__ import annotations

import http.client
import re
from typing import cast

__all__ = ["Response"]

_MAXLINE = 65536  # as http.client: one header line, and how many
_MAXHEADERS = 100
#: What email.feedparser takes for a header line: printable ASCII but ":" and space, then ":".
_HEADER = re.compile(r"[\041-\071\073-\176]*:")
#: email splits the block on any of these line ends.
_LINE_END = re.compile(r"(\r\n|\r|\n)")


class Headers:
    """A response's headers in order: what ``HTTPResponse`` asks of its ``msg``."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case)."""
        name = name.lower()
        for key, value in self._items:
            if key.lower() == name:
                return value
        return default

    def get_all(self, name: str, failobj: list[str] | None = None) -> list[str] | None:
        """Every value of ``name`` (any case), in order; ``failobj`` when there is none."""
        name = name.lower()
        return [value for key, value in self._items if key.lower() == name] or failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


def parse(block: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a header block (without its blank line), as
    ``email.parser`` reads them."""
    parts = _LINE_END.split(block.decode("iso-8859-1"))
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    if parts[-1]:
        lines.append(parts[-1])
    items: list[tuple[str, str]] = []
    folded = False  # the last line read began a header: a folded line continues it
    for line in lines:
        if line[:1] in (" ", "\t"):
            if folded:
                name, value = items[-1]
                items[-1] = (name, value + line)
            continue  # (a fold with no header before it is skipped)
        folded = False
        if line.startswith("From "):
            continue  # an mbox envelope line to email, not a header
        if not _HEADER.match(line):
            break  # email reads the rest as a body
        name, _, value = line.partition(":")
        if name:
            items.append((name, value.lstrip(" \t")))
            folded = True
    return [(name, value.rstrip("\r\n")) for name, value in items]


class Response(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` whose ``msg`` is a :class:`Headers`; what
    :meth:`begin` does besides is the standard library's, step for step."""

    def begin(self) -> None:
        if cast("object", self.headers) is not None:  # None until begun (typeshed says never)
            return
        while True:  # the final response: 100 Continue and its headers are skipped
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            self._header_block()
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        headers = Headers(parse(self._header_block()))
        self.headers = self.msg = headers  # type: ignore[assignment]
        encoding = headers.get("transfer-encoding")
        self.chunked = encoding is not None and encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                pass
            else:
                if self.length < 0:
                    self.length = None
        method = self._method  # type: ignore[attr-defined]
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _header_block(self) -> bytes:
        """The header lines up to the blank one (or the end), with http.client's bounds."""
        lines: list[bytes] = []
        while True:
            line = self.fp.readline(_MAXLINE + 1)
            if len(line) > _MAXLINE:
                raise http.client.LineTooLong("header line")
            if line in (b"\r\n", b"\n", b""):
                return b"".join(lines)
            lines.append(line)
            if len(lines) >= _MAXHEADERS:
                raise http.client.HTTPException(f"got more than {_MAXHEADERS} headers")
