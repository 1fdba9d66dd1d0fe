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

Workers are reused between calls.  A worker that dies (a segfault, an OOM kill, ``os._exit``)
fails only the call it was running, with ``BrokenProcessPool``; it is counted in
``restarts`` and a fresh process takes its place for the next call.  Workers run ``nice``
steps (10 by default) below the parent's CPU priority: a shadow must not take CPU time from
the live processes of a busy machine (``benchmarks/cpu_bound.py``, a competing process on the
other core: live kept 0.86-0.98x at 10, 0.75-0.84x at 0).  The ``spawn`` start
method is the default: forking a process that runs threads is unsafe.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["ProcessPool"]

T = TypeVar("T")


def _serve(conn: multiprocessing.connection.Connection, nice: int) -> None:
    """A worker process: lower its CPU priority by ``nice``, then run pickled calls until the
    pipe closes."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn, args, kwargs = pickle.loads(data)  # noqa: S301 - our own parent wrote it
            outcome: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller, who re-raises it
            outcome = ("raised", exc)
        try:
            reply = pickle.dumps(outcome)
        except Exception as exc:  # noqa: BLE001 - an unpicklable value or exception
            reply = pickle.dumps(("raised", TypeError(f"cannot send the result back: {exc}")))
        conn.send_bytes(reply)


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, nice: int) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_serve, args=(child, nice), daemon=True)  # type: ignore[attr-defined]
        self.process.start()
        child.close()

    def call(self, data: bytes) -> tuple[str, Any]:
        self.conn.send_bytes(data)
        reply: tuple[str, Any] = pickle.loads(self.conn.recv_bytes())  # noqa: S301 - our child
        return reply

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
        self._context = (
            multiprocessing.get_context(mp_context) if isinstance(mp_context, str) else mp_context
        )
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
        data = pickle.dumps((fn, args, kwargs))  # once per call, in the caller
        with self._slots:
            worker = self._take()
            try:
                kind, value = worker.call(data)
            except (EOFError, OSError) as exc:  # the worker died under the call
                self._discard(worker, died=True)
                raise BrokenProcessPool("a worker process died while running the call") from exc
            except BaseException:
                self._discard(worker, died=False)
                raise
            self._idle.put(worker)
        if kind == "raised":
            raise value
        result: T = value
        return result

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
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
                raise RuntimeError("cannot schedule new futures after shutdown")
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

    def __repr__(self) -> str:
        return (
            f"ProcessPool(max_workers={self.max_workers}, nice={self.nice}, "
            f"restarts={self.restarts})"
        )
