"""ProcessPool: worker processes for CPU-bound candidates, replaced when they die.

>>> import shadowdeco
>>> pool = shadowdeco.ProcessPool(1)
>>> pool.submit(pow, 2, 10).result()
1024
>>> pool.shutdown()

A pure-Python CPU-bound candidate on a thread fights the live path for the GIL; in another
process it does not.  What matters then is how little the *parent* does per call, since that
work does take the GIL: here the calling thread (a shadowdeco lane worker) pickles the call
once, writes it to an idle worker process over a pipe, and waits for the answer with the GIL
released.  No feeder or manager threads, unlike ``concurrent.futures.ProcessPoolExecutor``.

And how few times it needs the GIL back: while a live thread runs Python without pause, another
thread gets the GIL only every switch interval (5 ms), and each turn it takes switches the live
thread out.  So :meth:`ProcessPool.call_each` sends a batch of calls in one message, and the
worker writes their answers together (at the batch's end, or every 50 ms), read in one go.

Workers are reused between calls.  A worker that dies (a segfault, an OOM kill, ``os._exit``)
fails the calls whose answers had not come back, with ``BrokenProcessPool`` (a lone call: only
that one); it is counted in ``restarts`` and a fresh process takes its place for the next
call.  Workers run ``nice`` steps (10 by default) below the parent's CPU priority: a shadow
must not take CPU time from the live processes of a busy machine (``benchmarks/cpu_bound.py``,
a competing process on the other core: live kept 0.86-0.98x at 10, 0.75-0.84x at 0).  The
``spawn`` start method is the default: forking a process that runs threads is unsafe.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final, TypeVar

__all__ = ["PoolClosed", "ProcessPool"]

T = TypeVar("T")
#: One call for :meth:`ProcessPool.call_each`: ``(fn, args, kwargs)``.
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


# A worker's answers travel back as length-prefixed frames written straight to the socket, so
# the parent can take every answer that has arrived in one read: one GIL turn for several of
# them.  Elsewhere (Windows pipes) each answer is one Connection message.
_RAW: Final = os.name == "posix"
_LENGTH: Final = struct.Struct("!Q")
_READ: Final = 1 << 20
# A worker keeps the answers of a batch and writes them together, at the batch's end or once
# this many seconds passed since it last wrote: each write wakes the parent's lane thread,
# which then takes the GIL from the live thread (a live thread that ran 1 ms calls back to
# back was switched out 0.42 times per call with an answer written per call, 0.13 with this).
_WRITE_EVERY: Final = 0.05


def _serve(conn: multiprocessing.connection.Connection, nice: int) -> None:
    """A worker process: lower its CPU priority by ``nice``, then run batches of pickled calls
    until the pipe closes; one answer per call, written together (see :data:`_WRITE_EVERY`)."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            calls = pickle.loads(data)  # noqa: S301 - our own parent wrote it
        except BaseException as exc:  # noqa: BLE001 - e.g. the candidate's module is missing here
            _write(conn, [_answer(("failed", exc))])  # one answer for the whole batch
            continue
        answers: list[bytes] = []
        written = time.monotonic()
        for fn, args, kwargs in calls:
            try:
                outcome: tuple[str, Any] = ("returned", fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - sent back to the caller
                outcome = ("raised", exc)
            answers.append(_answer(outcome))
            del outcome
            if time.monotonic() - written >= _WRITE_EVERY:
                _write(conn, answers)
                answers.clear()
                written = time.monotonic()
        _write(conn, answers)


def _answer(outcome: tuple[str, Any]) -> bytes:
    try:
        return pickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - an unpicklable value or exception
        kind = "failed" if outcome[0] == "failed" else "raised"  # the parent counts on it
        return pickle.dumps((kind, TypeError(f"cannot send the result back: {exc}")))


def _write(conn: multiprocessing.connection.Connection, answers: list[bytes]) -> None:
    if not _RAW:
        for payload in answers:
            conn.send_bytes(payload)
        return
    view = memoryview(b"".join(_LENGTH.pack(len(payload)) + payload for payload in answers))
    fd = conn.fileno()
    while view:
        view = view[os.write(fd, view) :]


class PoolClosed(RuntimeError):
    """Raised for a call after :meth:`ProcessPool.shutdown` (a RuntimeError, as
    ``concurrent.futures`` raises)."""


class _Died(Exception):
    """The worker process ended under a batch: the answers it gave before."""

    def __init__(self, answers: list[tuple[str, Any]]) -> None:
        super().__init__("a worker process died")
        self.answers = answers


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, nice: int) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_serve, args=(child, nice), daemon=True)  # type: ignore[attr-defined]
        self.process.start()
        child.close()

    def call_each(self, data: bytes, count: int) -> list[tuple[str, Any]]:
        """Send a batch of ``count`` calls; their answers, in order (waiting with the GIL
        released).  Raises :class:`_Died` if the process ends first."""
        self.conn.send_bytes(data)
        answers: list[tuple[str, Any]] = []
        buffer = bytearray()
        try:
            while len(answers) < count:
                for payload in self._receive(buffer):
                    try:
                        answer: tuple[str, Any] = pickle.loads(payload)  # noqa: S301 - our child
                    except Exception as exc:  # noqa: BLE001 - e.g. an exception class missing here
                        answer = ("raised", exc)
                    if answer[0] == "failed":  # the batch did not unpickle in the worker
                        return [("raised", answer[1])] * count
                    answers.append(answer)
        except (EOFError, OSError) as exc:
            raise _Died(answers) from exc
        return answers

    def _receive(self, buffer: bytearray) -> list[bytes]:
        """The next answers: every complete one that has arrived (at least one)."""
        if not _RAW:
            return [self.conn.recv_bytes()]
        fd = self.conn.fileno()
        while True:
            payloads, used = [], 0
            while len(buffer) - used >= _LENGTH.size:
                (size,) = _LENGTH.unpack_from(buffer, used)
                end = used + _LENGTH.size + size
                if end > len(buffer):
                    break
                payloads.append(bytes(buffer[used + _LENGTH.size : end]))
                used = end
            del buffer[:used]
            if payloads:
                return payloads
            chunk = os.read(fd, _READ)
            if not chunk:
                raise EOFError
            buffer += chunk

    def stop(self) -> None:
        self.conn.close()
        self.process.join(1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)


class ProcessPool(Executor):
    """Up to ``max_workers`` worker processes (default: the number of CPUs), each run at a CPU
    priority ``nice`` steps below this process's (10 by default; 0 keeps it): on a busy machine
    the candidate takes the CPU time the live processes leave, not a share of theirs.  Where
    ``os.nice`` does not exist (Windows), ``nice`` is ignored."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str | multiprocessing.context.BaseContext = "spawn",
        nice: int = 10,
    ) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers <= 0
        ):
            raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"nice must be an int from 0 to 19, got {nice!r}")
        self.nice = nice
        self.max_workers = max_workers or os.cpu_count() or 1
        if isinstance(mp_context, str):
            try:
                self._context = multiprocessing.get_context(mp_context)
            except ValueError:
                methods = ", ".join(multiprocessing.get_all_start_methods())
                raise ValueError(
                    f"mp_context must be a start method ({methods}) or a context, "
                    f"got {mp_context!r}"
                ) from None
        elif isinstance(mp_context, multiprocessing.context.BaseContext):
            self._context = mp_context
        else:
            raise TypeError(f"mp_context must be a start method or a context, got {mp_context!r}")
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False
        #: worker processes that died and were replaced
        self.restarts = 0

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process; block (GIL released) for it."""
        kind, value = self.call_each([(fn, args, kwargs)])[0]
        if kind == "raised":
            raise value
        result: T = value
        return result

    def call_each(self, calls: Sequence[Call]) -> list[tuple[str, Any]]:
        """Run several calls in one worker process, one after another, sent in one message
        (blocking, the GIL released while it waits).

        One answer per call, in order: ``("returned", value)`` or ``("raised", exception)``,
        so a call that fails does not fail the others.  The worker writes its answers
        together, at the end or every :data:`_WRITE_EVERY` seconds; if it dies, the calls
        whose answers had not come back get ``BrokenProcessPool`` (the one that killed it, and
        those of its last moments or not begun), and a fresh worker takes its place.  Raises
        what pickling the calls raises (then nothing ran), and :class:`PoolClosed` (a
        ``RuntimeError``) after :meth:`shutdown`.
        """
        data = pickle.dumps(list(calls))  # once per batch, in the caller
        with self._slots:
            worker = self._take()
            try:
                answers = worker.call_each(data, len(calls))
            except _Died as died:
                self._discard(worker, died=True)
                answers = died.answers
            except BaseException:
                self._discard(worker, died=False)
                raise
            else:
                self._idle.put(worker)
        if len(answers) < len(calls):  # the worker died
            broken = BrokenProcessPool("the worker process died before this call's answer came")
            answers.extend([("raised", broken)] * (len(calls) - len(answers)))
        return answers

    def _take(self) -> _Worker:
        if self._closed:  # before the idle ones: shutdown() stopped them
            raise PoolClosed("cannot schedule new futures after shutdown")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise PoolClosed("cannot schedule new futures after shutdown")
            worker = _Worker(self._context, self.nice)
            self._workers.add(worker)
            return worker

    def _discard(self, worker: _Worker, *, died: bool) -> None:
        with self._lock:
            self._workers.discard(worker)
            if died:
                self.restarts += 1
        worker.stop()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """The Executor interface: :meth:`call` on a helper thread."""
        with self._lock:
            if self._closed:
                raise PoolClosed("cannot schedule new futures after shutdown")
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.max_workers, "shadowdeco-pool")
            threads = self._threads
        return threads.submit(self.call, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        while True:  # the idle ones are among those stopped: let them go
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    def __repr__(self) -> str:
        return (
            f"ProcessPool(max_workers={self.max_workers}, nice={self.nice}, "
            f"restarts={self.restarts})"
        )
