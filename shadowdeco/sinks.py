"""Where paired results go.

>>> from shadowdeco import shadow, sinks
>>> memory = sinks.Memory()
>>> @shadow(candidate=lambda x: x + 1, sinks=[memory])
... def predict(x):
...     return x + 1
>>> predict(1)
2
>>> [r.match for r in memory.wait(1, timeout=5)]
[True]

A sink is anything with an ``emit(result)`` method (optionally ``flush(timeout)`` and
``close()``), or a plain callable taking the result.  Each sink runs on a shadowdeco thread of
its own, never on the live path; whatever it raises is counted as a sink error and logged,
never passed on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ._result import SCHEMA_VERSION, Serializer, ShadowResult, error_of, to_jsonable

__all__ = ["JsonLines", "Logging", "Memory", "OpenTelemetry", "Sink", "SinkLike"]


@runtime_checkable
class Sink(Protocol):
    """The sink protocol: ``emit`` is required; ``flush(timeout)`` and ``close()`` optional."""

    def emit(self, result: ShadowResult) -> None: ...


SinkLike = Sink | Callable[[ShadowResult], object]


class Memory:
    """Keeps every result in memory: for tests, notebooks and small experiments.

    Thread-safe.  ``results`` is a copy; ``wait(n, timeout)`` blocks until ``n`` results
    arrived (or the timeout passed) and returns them.
    """

    def __init__(self) -> None:
        self._results: list[ShadowResult] = []
        self._cond = threading.Condition()

    def emit(self, result: ShadowResult) -> None:
        with self._cond:
            self._results.append(result)
            self._cond.notify_all()

    @property
    def results(self) -> list[ShadowResult]:
        with self._cond:
            return list(self._results)

    def wait(self, n: int, timeout: float = 5.0) -> list[ShadowResult]:
        """Wait until at least ``n`` results arrived or ``timeout`` seconds passed."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {n!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._results) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._results)

    def clear(self) -> None:
        with self._cond:
            self._results.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._results)

    def __repr__(self) -> str:
        return f"Memory(<{len(self)} results>)"


def _level(level: object) -> int:
    """A logging level: an int, or a name such as ``"INFO"`` (as ``Logger.setLevel`` takes)."""
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())  # the name's number, for a known name
        if isinstance(number, int):
            return number
        raise ValueError(f"level must be a logging level or its name, got {level!r}")
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be a logging level or its name, got {level!r}")
    return level


class Logging:
    """One log record per result on a stdlib logger (the default sink).

    The message is short and human (experiment, match, both durations, candidate status); the
    whole result dict rides in ``extra={"shadow": {...}}`` for structured handlers.
    """

    def __init__(
        self, logger: str | logging.Logger = "shadowdeco", level: int | str = logging.INFO
    ) -> None:
        if not isinstance(logger, (str, logging.Logger)):
            raise TypeError(f"logger must be a logger or its name, got {logger!r}")
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = _level(level)

    def emit(self, result: ShadowResult) -> None:
        logger = self.logger
        if not logger.isEnabledFor(self.level):
            return
        try:
            record = result.to_dict()
        except Exception as exc:  # noqa: BLE001 - the serializer failed: the record still goes
            record = _error_record(result, exc)  # as JsonLines writes its line
        logger.log(
            self.level,
            "shadow %s: match=%s live=%s candidate=%s %s",
            result.experiment,
            result.match,
            _ms(result.live.duration),
            _ms(result.candidate.duration),
            result.candidate.status,
            extra={"shadow": record},
        )

    def __repr__(self) -> str:
        return f"Logging({self.logger.name!r})"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}ms"


def as_emit(sink: object, *, param: str = "sinks") -> Callable[[ShadowResult], Any]:
    """The emit callable of a sink object or plain callable; TypeError for anything else."""
    emit = getattr(sink, "emit", None)
    if callable(emit):
        return emit  # type: ignore[no-any-return]
    if callable(sink):
        return sink
    raise TypeError(
        f"{param} must hold sinks (objects with emit(result)) or callables, got {sink!r}"
    )


# --------------------------------------------------------------------------------------------
# JsonLines

#: Bytes of whole lines buffered before they are written: enough to amortise the system call
#: under load, little enough that a crash loses at most a moment of results.
_BUFFER_BYTES: Final = 64 * 1024

_OPEN_FLAGS: Final = (
    os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)

_sink_log = logging.getLogger("shadowdeco.sinks")


class JsonLines:
    """One JSON line per result, in the shared v1 shape, appended to ``path``.

    Example (``shadowdeco report shadow.jsonl`` reads the file back)::

        jsonl = sinks.JsonLines("/var/log/app/shadow.jsonl", max_bytes=100_000_000)

        @shadow(candidate=predict_v2, sinks=[jsonl])
        def predict(features): ...

    * **Thread-safe**: lines are written whole, several at a time by one ``os.write`` on a
      file opened with ``O_APPEND``, so lines from many threads never tear or interleave (nor,
      on a local file system, lines from several processes appending to one file).
    * **Buffered**: written when 64 KiB of lines are pending, every ``flush_interval`` seconds
      (a daemon thread), on :meth:`flush` and on :meth:`close`; with ``fsync=True`` the last two
      also ``os.fsync``.
    * **Size rotation** when ``max_bytes`` is set, as ``logging.handlers.RotatingFileHandler``
      does: ``path`` becomes ``path.1`` … ``path.<backups>``, the oldest is dropped, and
      ``backups=0`` truncates in place.  A line is never split between files.  Sizes are
      tracked per process: with several processes on one file, leave rotation to logrotate.
    * **Private**: a file it creates gets exactly ``mode`` (0600: results may hold personal
      data), whatever the umask; an existing file keeps its mode.
    * **logrotate-friendly**: when the file is moved or deleted under it, a new one is opened
      at ``path`` (as ``logging.handlers.WatchedFileHandler`` does), checked on :meth:`flush`
      and, before other writes, at most once per ``flush_interval``.
    * **Failures are loud once**: a write error (disk full, permission denied) propagates, so
      shadowdeco counts a sink error; a warning is logged once per burst of errors; the lines
      that could not be written are dropped whole and counted in ``lines_lost`` (a line the
      failed write began is cut off the file again, or, if another process appended after it,
      left on a line of its own); writing resumes when the condition clears.

    The directory must exist and be writable, and the file is opened here, so a wrong path
    fails at start-up rather than at the first result.  Values JSON cannot hold go through
    ``serializer`` (default: the process-wide one, :func:`shadowdeco.to_jsonable`); a record
    that still does not encode is written with an ``"$error"`` key, never skipped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        backups: int = 5,
        flush_interval: float = 1.0,
        fsync: bool = False,
        serializer: Serializer | None = None,
        mode: int = 0o600,
    ) -> None:
        self._closed = True  # until the file is open, so __del__ has nothing to do
        self.path: Final = _check_path(path)
        self.max_bytes: Final = None if max_bytes is None else _check_int("max_bytes", max_bytes, 1)
        self.backups: Final = _check_int("backups", backups, 0)
        self.flush_interval: Final = _check_interval(flush_interval)
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be a bool, got {fsync!r}")
        self.fsync: Final = fsync
        if serializer is not None and not callable(serializer):
            raise TypeError(f"serializer must be a callable or None, got {serializer!r}")
        self.serializer: Final = serializer
        self.mode: Final = _check_int("mode", mode, 0)
        if self.mode > 0o7777:
            raise ValueError(f"mode must be a permission mode such as 0o600, got {mode!r}")
        #: Lines written to the file, and lines dropped because a write failed.
        self.lines_written = 0
        self.lines_lost = 0

        self._lock = threading.Lock()  # around every buffer, write, rotate and reopen
        self._buf: list[bytes] = []  # whole lines, each ending in "\n"
        self._buf_bytes = 0
        self._fd: int | None = None
        self._ident = (0, 0)  # (st_dev, st_ino) of the open file
        self._file_size = 0  # bytes in the open file, as far as this process knows
        self._torn = False  # a write failed midway: the file may end inside a line
        self._failing = False  # inside a burst of write errors, which was logged already
        # The interval write's last failure, not counted yet: it has no caller to raise to.
        self._unreported: OSError | None = None
        self._rotate_at = 0.0  # no rotation before (monotonic): the last one failed
        self._rotate_failing = False  # inside a burst of failed rotations, logged already
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

        _check_directory(self.path, rotating=self.max_bytes is not None)
        try:
            self._open()
        except OSError as exc:
            raise OSError(
                exc.errno, f"JsonLines cannot open {self.path!r}: {exc.strerror}"
            ) from exc
        self._closed = False
        _open_sinks.add(self)

    # -- the sink protocol ---------------------------------------------------------------------

    def emit(self, result: ShadowResult) -> None:
        """Buffer one line for ``result``; write the buffer when it is full.

        Raises the ``OSError`` of a failed write or rotation (so shadowdeco counts a sink
        error) and ``ValueError`` after :meth:`close`.
        """
        line = self._encode(result)  # outside the lock: encoding is the costly part
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            error = self._add_locked(line)
        if error is not None:
            raise error

    def _emit_batch(self, results: list[ShadowResult]) -> tuple[list[int], int]:
        """:meth:`emit` for several results at once (the sink's thread drains its queue so):
        one lock for all.  The indexes of the results whose emit would have raised, and the
        failed interval writes since the last call (1 or 0): errors nobody was told of."""
        lines = [self._encode(result) for result in results]
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            add = self._add_locked
            failed = [i for i, line in enumerate(lines) if add(line) is not None]
            unreported, self._unreported = self._unreported, None
            return failed, 0 if unreported is None else 1

    def _add_locked(self, line: bytes) -> OSError | None:
        """Buffer one line, rotating before and writing after as needed; the error that
        :meth:`emit` raises for it, already reported."""
        error: OSError | None = None
        if self.max_bytes is not None:
            size = self._file_size + self._buf_bytes
            if size and size + len(line) > self.max_bytes and time.monotonic() >= self._rotate_at:
                error = self._rotate(len(line))  # reported there; the line is kept, for later
        self._buf.append(line)
        self._buf_bytes += len(line)
        if self._timer is None:
            self._start_timer()
        if self._buf_bytes >= _BUFFER_BYTES:
            try:
                self._write_out()
            except OSError as exc:
                error = exc
                self._report(exc)
        return error

    def _rotate(self, needed: int) -> OSError | None:
        """Rotate, unless the file at ``path`` has room for ``needed`` more bytes once the
        buffer is written (logrotate moved the full one away); the error, reported, if it
        failed.  When renaming fails (a directory gone read-only), the lines go on into the
        current file, past ``max_bytes`` rather than lost, and rotation is tried again a
        ``flush_interval`` later, not before every line; the first failure of a burst is
        logged."""
        try:
            self._write_out()  # what is buffered belongs in the old file (if still there)
            if self._fd is None:  # moved away, and nothing was buffered: the one there now
                self._open()
        except OSError as exc:
            self._report(exc)
            return exc
        if self.max_bytes is None or self._file_size + needed <= self.max_bytes:
            return None
        try:
            self._rotate_files()
        except OSError as exc:
            self._rotate_at = time.monotonic() + self.flush_interval
            if not self._rotate_failing:
                self._rotate_failing = True
                _sink_log.warning(
                    "shadowdeco: %r cannot rotate (%s); writing on past max_bytes, "
                    "trying again every %s s",
                    self,
                    exc,
                    self.flush_interval,
                )
            return exc
        if self._rotate_failing:
            self._rotate_failing = False
            _sink_log.info("shadowdeco: %r rotates again", self)
        self._rotate_at = 0.0
        return None

    def flush(self, timeout: float | None = None) -> bool:
        """Write the buffered lines (and ``os.fsync`` with ``fsync=True``).

        False if another thread held the sink for longer than ``timeout`` seconds; a write
        error propagates.  After :meth:`close` there is nothing to flush.
        """
        if timeout is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            if self._closed:
                return True
            try:
                self._write_out()
                if self.fsync and self._fd is not None:
                    os.fsync(self._fd)
            except OSError as exc:
                self._unreported = None  # this error stands for it
                self._report(exc)
                raise
            unreported, self._unreported = self._unreported, None
            if unreported is not None:  # lines were lost since the last call: say so
                raise unreported
            return True
        finally:
            self._lock.release()

    def close(self) -> None:
        """Write what is buffered, fsync if asked, close the file.  Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            _open_sinks.discard(self)
            try:
                try:
                    self._write_out()
                finally:
                    self._close_fd()
            except OSError as exc:
                self._report(exc)
                raise
            unreported, self._unreported = self._unreported, None
            if unreported is not None:  # the file closed last could not be synced
                raise unreported

    def __repr__(self) -> str:
        return f"JsonLines({self.path!r})"

    def __del__(self) -> None:
        # As io's files do: a sink collected without close() still writes what it buffered.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # -- encoding ------------------------------------------------------------------------------

    def _encode(self, result: ShadowResult) -> bytes:
        try:
            text = result.to_json(self.serializer)
        except Exception:  # noqa: BLE001 - the slow path below says what went wrong
            text = self._encode_with_care(result)
        # Lone surrogates cannot be UTF-8: "\udxxx" keeps them, as the JSON escape they are.
        return (text + "\n").encode("utf-8", "backslashreplace")

    def _encode_with_care(self, result: ShadowResult) -> str:
        """The line for a result :meth:`ShadowResult.to_json` could not write."""
        try:
            record = result.to_dict(self.serializer)
        except Exception as exc:  # noqa: BLE001 - a broken result still leaves a line
            record = _error_record(result, exc)
        try:
            return _dumps(record)
        except Exception as exc:  # noqa: BLE001 - the serializer returned what JSON cannot hold
            try:
                # Convert the rest the default way, and say why the line looks different.
                return _dumps({**to_jsonable(record), "$error": _describe(exc)})
            except Exception as again:  # noqa: BLE001 - never lose the line silently
                return _dumps(_error_record(result, again))

    # -- the file (every method below runs with the lock held) ---------------------------------

    def _write_out(self) -> None:
        """Write the buffer with ``os.write`` calls of whole lines, into the file ``path``
        names now (checked first: two system calls per buffer of up to 64 KiB).

        On failure the lines not written are dropped (counted in ``lines_lost``), so no
        partial line stays behind to be written later, and the error propagates.
        """
        self._check_file()
        if not self._buf:
            return
        lines = len(self._buf)
        body = b"".join(self._buf)
        self._buf.clear()
        self._buf_bytes = 0
        try:
            fd = self._fd if self._fd is not None else self._open()
        except OSError:
            self.lines_lost += lines
            raise
        # After a fragment could not be removed, start on a new line: it stays on its own.
        start = 1 if self._torn else 0
        data = b"\n" + body if start else body
        before = self._file_size
        written, error = _write_all(fd, data)
        if error is not None:
            done = data.count(b"\n", start, written) if written > start else 0
            self.lines_written += done
            self.lines_lost += lines - done
            kept = written
            tail = written - (data.rfind(b"\n", 0, written) + 1)  # a line begun, not ended
            if tail and _truncate_if_unchanged(fd, before + written, tail):
                kept -= tail
            self._file_size = before + kept
            if kept:
                self._torn = data[kept - 1 : kept] != b"\n"
            raise error
        self.lines_written += lines
        self._file_size = before + written
        self._torn = False
        if self._failing:
            self._failing = False
            _sink_log.info("shadowdeco: %r writes again (%d lines lost)", self, self.lines_lost)

    def _check_file(self) -> None:
        """Let go of the open file if ``path`` no longer names it (moved, deleted: logrotate),
        or if our descriptor was closed under us."""
        fd = self._fd
        if fd is None:
            return
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._ident:
            # The descriptor was closed under us (and its number may name another file now):
            # forget it without closing it.
            self._fd = None
            return
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        except OSError:  # cannot tell (a directory lost its search permission): keep writing
            return
        if current is None or (current.st_dev, current.st_ino) != self._ident:
            self._close_fd()
        else:
            self._file_size = st.st_size  # counts other processes' lines too

    def _rotate_files(self) -> None:
        self._close_fd()
        if self.backups == 0:
            self._open(truncate=True)
            return
        try:
            for i in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            if os.path.exists(self.path):
                os.replace(self.path, f"{self.path}.1")
        finally:
            self._open()

    def _open(self, *, truncate: bool = False) -> int:
        fd = _open_exactly(self.path, self.mode, truncate=truncate)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._ident, self._file_size = fd, (st.st_dev, st.st_ino), st.st_size
        self._torn = False
        return fd

    def _close_fd(self) -> None:
        """Close the open file; with ``fsync``, synced first (rotated or moved away, its
        last lines must be on the disk too): a failure is reported, and raised by the next
        :meth:`flush`."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._report(exc)
            self._unreported = exc
        finally:
            os.close(fd)

    def _report(self, exc: OSError) -> None:
        """Log the first error of a burst; the rest are counted by shadowdeco, not logged."""
        if not self._failing:
            self._failing = True
            _sink_log.warning(
                "shadowdeco: %r cannot write (%s); lines are dropped and counted until it can",
                self,
                exc,
            )

    # -- the interval flush --------------------------------------------------------------------

    def _start_timer(self) -> None:
        # The thread holds only a weak reference: an unreferenced sink can still be collected.
        self._timer = threading.Thread(
            target=_flush_every,
            args=(weakref.ref(self), self._stop, self.flush_interval),
            name="shadowdeco-jsonl-flush",
            daemon=True,
        )
        try:
            self._timer.start()
        except RuntimeError:  # at interpreter exit (3.12+): no new threads; close() flushes
            self._timer = None

    def _flush_in_background(self) -> None:
        with self._lock:
            if self._closed or not self._buf:
                return
            try:
                self._write_out()
            except OSError as exc:  # nobody to raise to: logged once per burst, lines counted,
                self._report(exc)  # and a sink error at the next batch or flush()
                self._unreported = exc

    def _after_fork_in_child(self) -> None:
        # The parent writes what it had buffered; the timer thread did not survive the fork.
        self._lock = threading.Lock()
        self._buf = []
        self._buf_bytes = 0
        self._stop = threading.Event()
        self._timer = None


_open_sinks: weakref.WeakSet[JsonLines] = weakref.WeakSet()


def _flush_every(ref: weakref.ref[JsonLines], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        sink = ref()
        if sink is None:
            return
        sink._flush_in_background()
        del sink  # hold no strong reference while waiting


def _after_fork_in_child() -> None:
    for sink in list(_open_sinks):
        sink._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write ``data`` (short writes continue); how much was written, and the error if any."""
    written = 0
    with memoryview(data) as view:
        while written < len(data):
            try:
                n = os.write(fd, view[written:])
            except OSError as exc:
                return written, exc
            if n <= 0:
                return written, OSError(errno.EIO, "write() wrote nothing")
            written += n
    return written, None


def _truncate_if_unchanged(fd: int, size: int, tail: int) -> bool:
    """Cut the last ``tail`` bytes (a partly written line) if the file is still ``size`` long.

    A different size means another process appended after them: then they stay, and the next
    write starts on a new line instead.
    """
    try:
        if os.fstat(fd).st_size != size:
            return False
        os.ftruncate(fd, size - tail)
    except OSError:
        return False
    return True


def _dumps(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _describe(exc: BaseException) -> str:
    kind, message = error_of(exc)
    return f"{kind}: {message}"


def _error_record(result: ShadowResult, exc: BaseException) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "experiment": str(result.experiment),
        "id": str(result.id),
        "$error": f"result not serializable: {_describe(exc)}",
    }


def _open_exactly(path: str, mode: int, *, truncate: bool) -> int:
    """Open ``path`` to append; a file this creates gets exactly ``mode``, whatever the umask."""
    flags = _OPEN_FLAGS | (os.O_TRUNC if truncate else 0)
    for _ in range(3):
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            try:
                return os.open(path, flags)  # an existing file keeps its mode
            except FileNotFoundError:
                continue  # removed between the two calls: create it after all
        fchmod = getattr(os, "fchmod", None)  # not on Windows before 3.13
        if fchmod is not None:
            try:
                fchmod(fd, mode)
            except OSError:
                os.close(fd)
                raise
        return fd
    return os.open(path, flags | os.O_CREAT, mode)


def _check_path(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or an os.PathLike, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or an os.PathLike of str, got {path!r}")
    if not text:
        raise ValueError("path must not be empty, got ''")
    # Absolute, so a later chdir() does not send a reopened or rotated file elsewhere.
    return os.path.abspath(text)


def _check_directory(path: str, *, rotating: bool) -> None:
    """Fail at start-up, naming the path, where the file could not be created or rotated."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        problem = errno.ENOENT if not os.path.exists(directory) else errno.ENOTDIR
        what = "does not exist" if problem == errno.ENOENT else "is not a directory"
        raise OSError(problem, f"JsonLines path {path!r}: directory {directory!r} {what}")
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, f"JsonLines path {path!r} is a directory")
    exists = os.path.exists(path)
    if (rotating or not exists) and not os.access(directory, os.W_OK | os.X_OK):
        why = "rotation renames files in it" if exists else "the file is created in it"
        raise OSError(
            errno.EACCES,
            f"JsonLines path {path!r}: directory {directory!r} is not writable ({why})",
        )


def _check_int(param: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{param} must be at least {minimum}, got {value!r}")
    return value


def _check_interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"flush_interval must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"flush_interval must be a positive number of seconds, got {value!r}")
    return float(value)


if TYPE_CHECKING:  # for type checkers only: at run time __getattr__ below loads it
    from .otel import OpenTelemetry


def __getattr__(name: str) -> Any:
    # OpenTelemetry lives in otel.py, which needs the experiment registry, which imports this
    # module: loading it on first use keeps the import graph acyclic.
    if name == "OpenTelemetry":
        from .otel import OpenTelemetry  # noqa: PLC0415 - lazy on purpose, see above

        return OpenTelemetry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
