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
call.  One found dead as the calls are sent to it (it died while idle: nothing ran) is counted
too, and the calls go once more to a fresh one.  Unlike a thread, a worker process can be
killed: a shadowdeco lane holds a worker for a batch (:meth:`ProcessPool._lease`) and the
timer kills it at the batch's deadline (counted in ``restarts``).  :meth:`ProcessPool.shutdown`
never kills a worker under a call; a process forked from this one starts with no workers (it
must not read the answers meant for the parent).

Workers run ``nice`` steps (10 by default) below the parent's CPU priority: a shadow must not
take CPU time from the live processes of a busy machine (``benchmarks/cpu_bound.py``, a
competing process on the other core: live kept 0.86-0.98x at 10, 0.75-0.84x at 0).  The
``spawn`` start method is the default: forking a process that runs threads is unsafe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import pickle
import queue
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final, TypeVar

__all__ = ["PoolClosed", "ProcessPool"]

T = TypeVar("T")
#: One call for :meth:`ProcessPool.call_each`: ``(fn, args, kwargs)``.
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
#: Told of each answer of a batch as it comes back: ``(index of the call, answer)``.
Arrived = Callable[[int, tuple[str, Any]], None]


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
    try:
        _write(conn, [b""])  # ready: started, the main module imported (not a batch's time)
        _serve_batches(conn)
    except OSError:  # the parent closed the pipe (it shut the pool down, or ended): no one to tell
        return


def _serve_batches(conn: multiprocessing.connection.Connection) -> None:
    outbox = _Outbox(conn)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            calls = pickle.loads(data)  # noqa: S301 - our own parent wrote it
        except BaseException as exc:  # noqa: BLE001 - e.g. the candidate's module is missing here
            outbox.add(_answer(("failed", exc)))  # one answer for the whole batch
            outbox.send()
            continue
        outbox.begin()
        for fn, args, kwargs in calls:
            try:
                outcome: tuple[str, Any] = ("returned", fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - sent back to the caller
                outcome = ("raised", exc)
            outbox.add(_answer(outcome))
            del outcome
        outbox.send()


class _Outbox:
    """A worker's answers not yet written: written together at the batch's end, or once
    :data:`_WRITE_EVERY` passed since the last write, by the serving thread after a call or,
    while a call runs on (it may hang until the parent kills the process), by a thread of
    its own: the answers before a hung call reach the parent before its deadline."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.answers: list[bytes] = []
        self.written = time.monotonic()
        self.ready = threading.Condition(threading.Lock())
        self.late: threading.Thread | None = None

    def begin(self) -> None:
        """A batch begins: the first write is due :data:`_WRITE_EVERY` from now."""
        with self.ready:
            self.written = time.monotonic()

    def add(self, answer: bytes) -> None:
        with self.ready:
            self.answers.append(answer)
            if time.monotonic() - self.written >= _WRITE_EVERY:
                self._send_locked()
            elif len(self.answers) == 1:
                if self.late is None:
                    self.late = threading.Thread(target=self._send_late, daemon=True)
                    self.late.start()
                self.ready.notify()

    def send(self) -> None:
        with self.ready:
            self._send_locked()

    def _send_locked(self) -> None:
        _write(self.conn, self.answers)
        self.answers = []
        self.written = time.monotonic()

    def _send_late(self) -> None:
        """Write answers that have waited :data:`_WRITE_EVERY` while the next call runs."""
        with self.ready:
            while True:
                if not self.answers:
                    self.ready.wait()
                    continue
                due = self.written + _WRITE_EVERY - time.monotonic()
                if due > 0:
                    self.ready.wait(due)
                    continue
                try:
                    self._send_locked()
                except OSError:  # the parent closed the pipe: the serving thread ends too
                    return


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
    """The worker process ended under a batch: the answers it gave before, and whether the
    batch reached it (if not, nothing of it ran)."""

    def __init__(self, answers: list[tuple[str, Any]], *, sent: bool = True) -> None:
        super().__init__("a worker process died")
        self.answers = answers
        self.sent = sent


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, nice: int) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self._child = child
        self.process = context.Process(target=_serve, args=(child, nice), daemon=True)  # type: ignore[attr-defined]
        self.killed = False  # by the pool, at a deadline (under its lock)

    def start(self) -> None:
        """Start the process (once the pool counts it: a fork meanwhile sees it as the
        parent's, not as one of the child's own to terminate at exit)."""
        self.process.start()
        self._child.close()

    def wait_ready(self) -> None:
        """Wait (the GIL released) until the new process is ready for a batch: its start-up
        (a spawned interpreter importing the main module) is no batch's time.  A process
        that died starting is found dead when a batch is sent."""
        with contextlib.suppress(EOFError, OSError):
            self._receive(bytearray())

    def call_each(
        self, data: bytes, count: int, arrived: Arrived | None = None
    ) -> list[tuple[str, Any]]:
        """Send a batch of ``count`` calls; their answers, in order (waiting with the GIL
        released), each passed to ``arrived`` as it comes.  Raises :class:`_Died` if the
        process ends first."""
        try:
            self.conn.send_bytes(data)
        except OSError as exc:  # it died while idle (an OOM kill): the batch never reached it
            raise _Died([], sent=False) from exc
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
                    if arrived is not None:
                        arrived(len(answers), answer)
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


class _Lease:
    """A worker slot held by one thread for one or more calls (a lane holds one for a batch):
    the worker process it runs them on, and :meth:`kill`, for a deadline."""

    __slots__ = ("killed", "lock", "pool", "worker")

    def __init__(self, pool: ProcessPool) -> None:
        self.pool = pool
        self.lock = threading.Lock()  # worker and killed: the holder and a killer race
        self.worker: _Worker | None = None
        self.killed = False

    def kill(self) -> None:
        """Kill the worker process running this lease's calls (its deadline passed), counted
        in ``restarts`` at once; the holder finds it dead and replaces it, and later calls on
        the lease run nothing."""
        with self.lock:
            self.killed = True
            if self.worker is not None:
                self.pool._kill(self.worker)


_DIED: Final = "the worker process died before this call's answer came"
_KILLED: Final = "the worker process was killed at the timeout"


def _broken(count: int, message: str) -> list[tuple[str, Any]]:
    return [("raised", BrokenProcessPool(message))] * count


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
        self._closed = False
        #: worker processes that died (or were killed at a deadline) and were replaced
        self.restarts = 0
        self._start_fresh()
        _pools.add(self)

    def _start_fresh(self) -> None:
        """No workers, no calls in progress: a new pool, or a forked child's copy of one."""
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._busy = 0  # leases held (under the lock): shutdown(wait=True) waits for them
        self._workers: set[_Worker] = set()
        self._threads: ThreadPoolExecutor | None = None
        self._local = threading.local()  # .lease: the one this thread holds

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process; block (GIL released) for it."""
        return self._call(fn, args, kwargs, admitted=False)

    def _call(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, admitted: bool
    ) -> T:
        kind, value = self._call_each([(fn, args, kwargs)], admitted=admitted)[0]
        if kind == "raised":
            raise value
        result: T = value
        return result

    def call_each(
        self, calls: Sequence[Call], *, arrived: Arrived | None = None
    ) -> list[tuple[str, Any]]:
        """Run several calls in one worker process, one after another, sent in one message
        (blocking, the GIL released while it waits).

        One answer per call, in order: ``("returned", value)`` or ``("raised", exception)``,
        so a call that fails does not fail the others.  The worker writes its answers
        together, at the end or once :data:`_WRITE_EVERY` seconds passed (also while a later
        call runs on); if it dies, the calls whose answers had not come back get
        ``BrokenProcessPool`` (the one that killed it, and those of its last moments or not
        begun), and a fresh worker takes its place.  A worker
        found dead when the calls are sent (nothing ran) is replaced and the calls sent once
        more.  Raises what pickling the calls raises (then nothing ran), and
        :class:`PoolClosed` (a ``RuntimeError``) after :meth:`shutdown`.  On a thread that
        holds a lease (a shadowdeco lane, for a batch), the calls run on its worker.

        ``arrived(index, answer)``, if given, is told of each answer as it comes back, on this
        thread, while later calls of the batch may still run (answers given before a worker
        died included; an exception out of it ends the batch and loses the worker).
        """
        return self._call_each(calls, admitted=False, arrived=arrived)

    def _call_each(
        self, calls: Sequence[Call], *, admitted: bool, arrived: Arrived | None = None
    ) -> list[tuple[str, Any]]:
        data = pickle.dumps(list(calls))  # once per batch, in the caller
        lease: _Lease | None = getattr(self._local, "lease", None)
        if lease is not None:
            return self._run(lease, data, len(calls), arrived)
        with self._lease(admitted=admitted) as lease:
            return self._run(lease, data, len(calls), arrived)

    @contextlib.contextmanager
    def _lease(self, *, admitted: bool = False) -> Iterator[_Lease]:
        """Hold a worker slot (waiting, the GIL released, for a free one) for the calls this
        thread makes meanwhile; ``kill()`` on it kills the worker process running them.

        Raises :class:`PoolClosed` after :meth:`shutdown` (``admitted``: a future submitted
        before it, which still runs).  A lease held when the pool shuts down keeps running.
        """
        self._slots.acquire()
        with self._lock:
            if self._closed and not admitted:
                self._slots.release()
                raise PoolClosed("cannot schedule new futures after shutdown")
            self._busy += 1
        lease = _Lease(self)
        self._local.lease = lease
        try:
            # A worker ready for the calls before the holder starts its clock: a new one's
            # start-up must not count against a deadline (a kill loop on a slow start).  One
            # that cannot be started (no more processes) is tried again for the calls, which
            # then fail as calls do.
            with contextlib.suppress(Exception):
                lease.worker = self._take()
            yield lease
        finally:
            self._local.lease = None
            self._release(lease)

    def _run(
        self, lease: _Lease, data: bytes, count: int, arrived: Arrived | None
    ) -> list[tuple[str, Any]]:
        retried = False
        while True:
            with lease.lock:
                killed, worker = lease.killed, lease.worker
            if killed:
                return _broken(count, _KILLED)
            if worker is None:
                worker = self._take(fresh=retried)
                with lease.lock:
                    lease.worker = worker
                    if lease.killed:  # killed while it was taken: kill what it got
                        self._kill(worker)
            try:
                answers = worker.call_each(data, count, arrived)
            except _Died as died:
                self._lose(lease, worker, died=True)
                if died.sent or retried:
                    answers = died.answers
                    break
                retried = True  # it died while idle: nothing ran, once more on a fresh one
                continue
            except BaseException:
                self._lose(lease, worker, died=False)
                raise
            break
        if len(answers) < count:  # the worker died
            answers.extend(_broken(count - len(answers), _KILLED if lease.killed else _DIED))
        return answers

    def _take(self, *, fresh: bool = False) -> _Worker:
        if not fresh:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
        worker = _Worker(self._context, self.nice)
        with self._lock:
            self._workers.add(worker)
        try:
            worker.start()
        except BaseException:
            with self._lock:
                self._workers.discard(worker)
            raise
        worker.wait_ready()
        return worker

    def _lose(self, lease: _Lease, worker: _Worker, *, died: bool) -> None:
        with lease.lock:
            lease.worker = None
        self._discard(worker, died=died)

    def _release(self, lease: _Lease) -> None:
        with lease.lock:
            worker, lease.worker = lease.worker, None
            killed = lease.killed
        if worker is not None and killed:  # killed between calls: it is dead all the same
            self._kill(worker)
            self._discard(worker, died=True)
            worker = None
        with self._lock:
            if worker is not None and not self._closed:
                self._idle.put(worker)
                worker = None
            self._busy -= 1
            if not self._busy:
                self._released.notify_all()
        self._slots.release()
        if worker is not None:  # the pool was shut down while it ran: stop it now
            self._discard(worker, died=False)

    def _kill(self, worker: _Worker) -> None:
        with self._lock:
            if worker.killed:
                return
            worker.killed = True
            self.restarts += 1
        worker.process.kill()

    def _discard(self, worker: _Worker, *, died: bool) -> None:
        with self._lock:
            self._workers.discard(worker)
            if died and not worker.killed:  # (a killed one was counted as it was killed)
                self.restarts += 1
        worker.stop()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """The Executor interface: :meth:`call` on a helper thread (a future submitted before
        :meth:`shutdown` still runs, unless ``cancel_futures``)."""
        with self._lock:
            if self._closed:
                raise PoolClosed("cannot schedule new futures after shutdown")
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.max_workers, "shadowdeco-pool")
            threads = self._threads
        return threads.submit(self._call, fn, args, kwargs, admitted=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; with ``wait``, return once the submitted futures (all, or those
        running if ``cancel_futures``) and the calls in progress have ended and the workers
        stopped.  Without, idle workers stop now and busy ones when their calls end.  A
        worker is never killed under a call here (nor counted in ``restarts``)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            with self._lock:
                self._released.wait_for(lambda: not self._busy)
        while True:  # idle: no lease holds them (a busy one is stopped as its lease ends)
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            self._discard(worker, died=False)

    def _after_fork_in_child(self) -> None:
        """The parent's workers, locks and calls in progress are the parent's: close this
        process's copies of the pipes (the parent's ends stay open) and start afresh.  The
        parent's processes are neither joined nor killed, nor left for multiprocessing to
        terminate at this process's exit."""
        workers = self._workers
        self._start_fresh()
        for worker in workers:
            worker.conn.close()
            _CHILDREN.discard(worker.process)

    def __repr__(self) -> str:
        return (
            f"ProcessPool(max_workers={self.max_workers}, nice={self.nice}, "
            f"restarts={self.restarts})"
        )


_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()
# multiprocessing's own children, which it terminates and joins at exit: not a forked child's.
_CHILDREN: set[Any] = getattr(multiprocessing.process, "_children", set())


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
