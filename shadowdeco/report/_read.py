"""Finding the log files and reading them one line at a time.

>>> sources = expand_paths(["shadow.jsonl"])  # doctest: +SKIP
>>> [s.path for s in sources]  # doctest: +SKIP
['shadow.jsonl.2', 'shadow.jsonl.1', 'shadow.jsonl']

* A path names a file; its rotated backups (``path.1``, ``path.2``, … as
  :class:`shadowdeco.sinks.JsonLines` and ``RotatingFileHandler`` write them, and
  ``path.1.gz``, … as logrotate compresses them) are read with it, oldest first.
* A path with ``*``, ``?`` or ``[`` that is not itself a file is a glob (for shells that do not
  expand it); one that matches nothing is an error.
* ``-`` reads standard input.  Gzip files are recognised by their first bytes.
* Every file is opened once before any is read, so a missing or unreadable one stops the
  report before it starts (:class:`InputError`, whose message names the file), never halfway.
* A line that is not a JSON object (or is nested too deeply to parse) is skipped and counted
  by :class:`Problems` (with the first few file names and line numbers); a blank line is
  ignored.  A last line with no newline that does not parse is skipped as *unfinished* (a file
  still being written).  Memory is one line at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import glob
import gzip
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final

__all__ = [
    "EARLIEST",
    "InputError",
    "Malformed",
    "Problems",
    "Source",
    "expand_paths",
    "read_records",
    "unix_time",
]

# A backup's name after its file's: ".N" (RotatingFileHandler, logrotate) or logrotate's
# dateext "-YYYYMMDD" (any dateformat that starts with the date: -%Y-%m-%d-%s, …); ".gz" after.
_SUFFIX: Final = r"(?:\.(?P<n>\d+)|-(?P<date>\d{4}-?\d{2}-?\d{2}(?:[-_]?\d+)*))(?:\.gz)?"
_BACKUP: Final = re.compile(_SUFFIX)
_BACKUP_END: Final = re.compile(_SUFFIX + "$")
_GLOB_CHARS: Final = re.compile(r"[*?\[]")
_GZIP_MAGIC: Final = b"\x1f\x8b"

#: Why a last line that does not parse was skipped: a writer may be appending to the file
#: (a report of a live service's log), or stopped in the middle of a line.
_UNFINISHED: Final = "unfinished last line: still being written?"

#: Why a line that ``json`` cannot parse without running out of stack was skipped.
_TOO_DEEP: Final = "nested too deeply"

#: Malformed lines listed by file and number; the rest are only counted.
EXAMPLES: Final = 5

#: The Unix times a ``datetime`` holds: the years 1 to 9999 (UTC), ``END`` excluded.  The
#: report prints, compares and buckets times as dates, so a time outside them (a number in
#: milliseconds, ``1e300``, NaN) is not one it can use.
EARLIEST: Final = _dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc).timestamp()
END: Final = _dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=_dt.timezone.utc).timestamp() + 1
_NOT_A_TIME: Final = "not a time between the years 1 and 9999"


class InputError(Exception):
    """A file the report cannot read, or a glob that matches nothing; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """One file to read: ``path`` as given or found; ``stream`` the file it rotated from."""

    path: str
    stream: str


@dataclasses.dataclass(frozen=True, slots=True)
class Malformed:
    """A skipped line: where it is and why it was skipped."""

    path: str
    line: int
    reason: str


@dataclasses.dataclass(slots=True)
class Problems:
    """What went wrong while reading: skipped lines and files that failed partway."""

    malformed: int = 0
    examples: list[Malformed] = dataclasses.field(default_factory=list)
    per_file: dict[str, int] = dataclasses.field(default_factory=dict)
    read_errors: list[str] = dataclasses.field(default_factory=list)

    def skip(self, source: Source, line: int, reason: str) -> None:
        self.malformed += 1
        self.per_file[source.path] = self.per_file.get(source.path, 0) + 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(Malformed(source.path, line, reason))


def expand_paths(paths: Sequence[str]) -> list[Source]:
    """The files to read, backups first, each once; :class:`InputError` if one is unreadable."""
    sources: list[Source] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        plain = path[:-3]
        if path.endswith(".gz") and _BACKUP_END.search(plain) and os.path.isfile(plain):
            path = plain  # as _backups() chooses: the plain twin holds the same lines, whole
        real = path if path == "-" else os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            backup = _BACKUP_END.search(real)  # a backup belongs to the file it rotated from
            sources.append(Source(path, real[: backup.start()] if backup else real))

    for given in paths:
        if given == "-":
            add("-")
            continue
        if _GLOB_CHARS.search(given) and not os.path.lexists(given):
            matches = sorted(glob.glob(given))
            if not matches:
                raise InputError(f"cannot read {given}: no file matches this pattern")
        else:
            matches = [given]
        for path in matches:
            _check_readable(path)
            for backup in _backups(path):
                _check_readable(backup)
                add(backup)
            add(path)
    return sources


def _backups(path: str) -> list[str]:
    """``path.N``, ``path-DATE`` (logrotate's ``dateext``), either with ``.gz``, that exist:
    the oldest first (dated ones by date, then the highest N).  When ``x.1`` and ``x.1.gz``
    both exist (logrotate's ``compress`` running, or its input left behind) they hold the
    same lines: the plain one is read, the compressed one may be incomplete."""
    found: dict[tuple[int, str, int], str] = {}
    for candidate in sorted(glob.glob(glob.escape(path) + "[.-]*")):  # "x.1" before "x.1.gz"
        match = _BACKUP.fullmatch(candidate, len(path))
        if match is not None and os.path.isfile(candidate):
            n, date = match.group("n", "date")
            # Dated first, oldest first (the digits of one dateformat sort as the dates do);
            # then numbered, the highest N first.
            order = (0, re.sub(r"\D", "", date), 0) if date else (1, "", -int(n))
            found.setdefault(order, candidate)
    return [found[order] for order in sorted(found)]


def _check_readable(path: str) -> None:
    if os.path.isdir(path):
        raise InputError(f"cannot read {path}: it is a directory")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _open(source: Source) -> Iterator[IO[bytes]]:
    with contextlib.ExitStack() as stack:
        raw: IO[bytes]
        if source.path == "-":  # stdin (never closed): its first two bytes, then the rest
            stdin = sys.stdin.buffer
            head = b""
            while len(head) < 2:  # two bytes or the end, however a pipe splits them
                more = stdin.read(2 - len(head))
                if not more:
                    break
                head += more
            raw = io.BufferedReader(_Prefixed(head, stdin))
        else:
            raw = stack.enter_context(open(source.path, "rb"))
            head = raw.peek(2)[:2]  # type: ignore[attr-defined]  # a file's peek is whole
        if head == _GZIP_MAGIC:
            unzipped = gzip.GzipFile(fileobj=raw)
            stack.callback(unzipped.close)
            yield unzipped  # type: ignore[misc] # GzipFile reads bytes as IO[bytes] does
        else:
            yield raw


class _Prefixed(io.RawIOBase):
    """``head``, then what ``rest`` reads: a stream whose first bytes were looked at."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = getattr(self._rest, "read1", self._rest.read)(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_records(
    sources: Sequence[Source], problems: Problems
) -> Iterator[tuple[Source, int, dict[str, Any]]]:
    """``(source, line number, record)`` for every JSON object line of every source."""
    loads = json.loads
    for source in sources:
        number = 0
        try:
            with _open(source) as stream:
                for number, line in enumerate(stream, 1):
                    try:
                        record = loads(line)
                    except ValueError:  # not JSON, or not UTF-8
                        if line.strip():  # a blank line is ignored
                            ended = line.endswith(b"\n")  # else: the last line, cut short
                            problems.skip(source, number, "not JSON" if ended else _UNFINISHED)
                        continue
                    except RecursionError:  # "[[[[…": deeper than the parser's stack
                        problems.skip(source, number, _TOO_DEEP)
                        continue
                    if isinstance(record, dict):
                        yield source, number, record
                    else:
                        problems.skip(source, number, "not a JSON object")
        except (OSError, EOFError, zlib.error) as exc:  # a disk error, a broken gzip file
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            problems.read_errors.append(f"cannot read {source.path} after line {number}: {reason}")


def unix_time(seconds: float) -> float:
    """``seconds`` as a float, if a ``datetime`` holds that time (:data:`EARLIEST` to
    :data:`END`); else ``ValueError``.  Checked before any conversion, so NaN and an int past
    the float range fail the same way."""
    if EARLIEST <= seconds < END:
        return float(seconds)
    raise ValueError(_NOT_A_TIME)


def parse_time(text: str) -> float:
    """Unix time of an ISO 8601 date or date-time; a trailing ``Z`` and no zone mean UTC.

    ``ValueError`` names the text.  (Python 3.10's ``fromisoformat`` refuses ``Z``.)
    """
    moment = _parse_iso(text)
    if moment is None:
        raise ValueError(f"not an ISO 8601 date or time: {text!r}")
    try:
        return unix_time(moment.timestamp())
    except ValueError as exc:  # 0001-01-01T00:00+01:00 is before the year 1 in UTC
        raise ValueError(f"{exc}: {text!r}") from None


def record_time(value: Any) -> float | None:
    """Unix time of a record's ``started_at`` (ISO text, or a number), or None without one.

    ``ValueError`` for a time no ``datetime`` holds (see :func:`unix_time`): the line is
    malformed.  Text that is no date at all is no time, as a missing one.
    """
    if isinstance(value, str):
        try:
            moment = _dt.datetime.fromisoformat(value)  # the fast path: what to_dict() writes
        except ValueError:
            parsed = _parse_iso(value)
            if parsed is None:
                return None
            moment = parsed
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        seconds: float = moment.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    else:
        return None
    if EARLIEST <= seconds < END:
        return float(seconds)
    raise ValueError(f"started_at is {_NOT_A_TIME}")


def _parse_iso(text: str) -> _dt.datetime | None:
    """An ISO 8601 date or date-time as an aware datetime (no zone: UTC), or None."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.timezone.utc)
