"""Delivery to sinks: one thread and one bounded queue per sink.

Each distinct sink object (or plain callable) gets its own worker, so a sink that raises,
is slow, or hangs holds up only itself: the other sinks of the same result, and every
other experiment, keep receiving results.  A sink that falls ``max_pending`` results behind
loses the newest ones, counted per sink in ``Experiment.stats().sink_drops``, so memory stays
bounded.  Nothing here runs on the live path.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._result import ShadowResult
from ._runner import FAILED, Intake, Waited, guard, start_daemon
from .sinks import JsonLines, as_emit

if TYPE_CHECKING:
    from ._experiment import Experiment

__all__ = ["SinkWorker", "sink_name", "stop_worker", "stop_workers", "worker_for"]

log = logging.getLogger("shadowdeco")

#: Results waiting for one sink before new ones are dropped for it.
max_pending = 10_000

#: Results handed to a batching sink (JsonLines) in one call, at most.
BATCH = 256


def sink_attribute(sink: object, name: str) -> Any:
    """``getattr(sink, name, None)``, and None when looking it up raises something else than
    AttributeError (a delegating ``__getattr__``): a sink's quirk never reaches a caller."""
    try:
        return getattr(sink, name, None)
    except Exception:  # noqa: BLE001 - the sink's own code, on a caller's thread
        return None


def sink_name(sink: object) -> str:
    """A short, stable name for a sink in stats and logs: a function's qualified name, or
    the class name with the sink's ``path`` when it has one (``JsonLines(/var/x.jsonl)``)."""
    name = sink_attribute(sink, "__qualname__")
    if isinstance(name, str):
        return name
    path = sink_attribute(sink, "path")
    kind = type(sink).__qualname__
    return f"{kind}({path})" if isinstance(path, str) else kind


#: A queued result: its experiment, the result, and what to call once the sink had it.
_Item = tuple["Experiment", ShadowResult, Callable[[], object] | None]


class SinkWorker:
    """Hands results to one sink from its own thread."""

    def __init__(self, sink: object) -> None:
        self.sink = sink
        self.name = sink_name(sink)
        self._emit = as_emit(sink)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the counters below; taken directly on the hot path
        self._idle = Waited(self._lock)  # notified only when wait_idle waits
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._warned = False
        self._stopping = False  # stop() queued the stop marker: nothing is queued after it
        self._stopped = False  # the thread took its stop marker
        self._on_stop: Callable[[], object] | None = None  # then runs on the thread, see stop()
        self._flushing: threading.Thread | None = None  # the sink's flush running, see flush()

    def offer(
        self, exp: Experiment, result: ShadowResult, delivered: Callable[[], object] | None = None
    ) -> bool:
        """Queue a result for the sink; False (and nothing queued) when it is too far behind.

        ``delivered`` is called once the sink had it (an inline call waits for that)."""
        return not self.offer_many(exp, (result,), delivered)

    def offer_many(
        self,
        exp: Experiment,
        results: Sequence[ShadowResult],
        delivered: Callable[[], object] | None = None,
    ) -> int:
        """Queue results for the sink, up to its bound (one lock for all); how many of the
        last ones were not queued, the sink being too far behind."""
        if self._thread is None and not self.ensure_started():
            # At interpreter exit with no thread for this sink yet: deliver right here.
            with self._lock:
                self._pending += len(results)
            for result in results:
                self._deliver(exp, result, delivered)
            return 0
        with self._lock:
            if self._stopping:  # queued behind the stop marker, it would never be taken
                return len(results)
            taken = min(len(results), max(0, max_pending - self._pending))
            self._pending += taken
            if taken < len(results) and not self._warned:
                self._warned = True  # once per burst: the sink is falling behind
                log.warning(
                    "shadowdeco: sink %s is %d results behind; dropping", self.name, max_pending
                )
            put = self._queue.put  # under the lock: never after the stop marker
            for result in results[:taken]:
                put((exp, result, delivered))
        return len(results) - taken

    def ensure_started(self) -> bool:
        with self._lock:
            if self._thread is None:
                self._thread = start_daemon(self._run, f"shadowdeco-sink-{self.name}")
            return self._thread is not None

    def _run(self) -> None:
        intake = Intake(self._queue)
        if isinstance(self.sink, JsonLines) and type(self.sink).emit is JsonLines.emit:
            # (A subclass that overrides emit() gets its emit(), one result at a time.)
            self._run_batched(intake, self.sink._emit_batch)
            return
        while True:
            item = intake.take()
            if item is None:
                self._stop_here()
                return
            self._deliver(*item)
            del item  # hold nothing while waiting for the next one

    def _run_batched(
        self,
        intake: Intake[_Item | None],
        emit_batch: Callable[[list[ShadowResult]], tuple[list[int], int]],
    ) -> None:
        """Hand over what waits in one call (JsonLines: one lock for all the lines).  A
        failure of the whole call counts a sink error for every result in it, and is logged
        under the first result's experiment, as is a failed interval write the call
        reports (it has no caller of its own)."""
        while True:
            batch = intake.take_many(BATCH)
            stop = batch[-1] is None
            items = cast("list[_Item]", batch[:-1] if stop else batch)
            del batch
            if items:
                outcome = guard("sink", items[0][0].name, emit_batch, [r for _, r, _ in items])
                failed, unreported = (range(len(items)), 0) if outcome is FAILED else outcome
                for i in failed:
                    items[i][0]._count_sink_error()
                for _ in range(unreported):
                    items[0][0]._count_sink_error()
                self._done(len(items))
                for _, _, delivered in items:
                    if delivered is not None:
                        delivered()
            del items  # hold nothing while waiting for the next ones
            if stop:
                self._stop_here()
                return

    def _deliver(
        self, exp: Experiment, result: ShadowResult, delivered: Callable[[], object] | None
    ) -> None:
        if guard("sink", exp.name, self._emit, result) is FAILED:
            exp._count_sink_error()
        self._done(1)
        if delivered is not None:
            delivered()

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n
            if self._pending == 0:
                self._warned = False  # caught up: the next fall-behind is a new burst
                if self._idle.waiters:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until every queued result was handed to the sink."""
        own = 1 if self._thread is threading.current_thread() else 0  # its own delivery
        with self._idle:
            return bool(self._idle.wait_for(lambda: self._pending <= own, timeout))

    def stop(self, timeout: float | None, then: Callable[[], object] | None = None) -> None:
        """End the thread after what is queued, then run ``then`` (the sink's close) on the
        thread itself, joined up to ``timeout``: closing can never hang the caller, neither
        behind a hanging sink nor in a close that waits (a writer stuck in ``os.write``).
        Without a thread of its own (never used), or stopped from its own sink, ``then``
        runs here."""
        thread = self._thread
        if thread is not None:
            here = thread is threading.current_thread()  # stopped from its own sink
            with self._lock:
                if not here and not self._stopped:
                    self._on_stop, then = then, None
                    _retiring.add(self)  # until its thread ends: see wait_retired()
                self._stopping = True
                self._queue.put(None)
            if not here:
                thread.join(timeout)
        if then is not None:
            then()

    def start_flush(
        self, flush: Callable[[float | None], Any], timeout: float | None, experiment: str
    ) -> Callable[[float | None], Any]:
        """Start ``flush(timeout)`` of the sink on a thread of its own; what waits for its
        outcome, up to a timeout: a sink's flush that ignores its timeout cannot hang the
        caller, and the sinks of an experiment flush side by side.  The outcome is what the
        flush returned, FAILED if it raised (logged), or False past the wait's timeout, and
        at once while an earlier flush of the sink still runs."""
        with self._lock:
            if self._flushing is not None and self._flushing.is_alive():
                return lambda _timeout: False
        outcome: list[Any] = []
        thread = start_daemon(
            lambda: outcome.append(guard("sink flush", experiment, flush, timeout)),
            f"shadowdeco-flush-{self.name}",
        )
        if thread is None:  # at interpreter exit (no new threads): here, then
            done = guard("sink flush", experiment, flush, timeout)
            return lambda _timeout: done
        with self._lock:
            self._flushing = thread

        def wait(timeout: float | None) -> Any:
            thread.join(timeout)
            return outcome[0] if outcome else False

        return wait

    def _stop_here(self) -> None:
        with self._lock:
            self._stopped = True
            then, self._on_stop = self._on_stop, None
        try:
            if then is not None:
                then()
        finally:
            _retiring.discard(self)


#: Workers stopped whose threads still deliver what they hold, and close their sinks.
_retiring: set[SinkWorker] = set()


def wait_retired(timeout: float | None) -> bool:
    """Wait until the workers being stopped (the sinks let go of: the old defaults after
    ``configure(default_sinks=...)``, a closed experiment's) have delivered what they hold
    and closed their sinks; False past ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for worker in list(_retiring):
        thread = worker._thread
        if thread is not None:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
    return True


_lock = threading.Lock()
_workers: dict[int, SinkWorker] = {}


def worker_for(sink: Any) -> SinkWorker:
    """The worker of ``sink``, created on first use; one per distinct sink object."""
    worker = _workers.get(id(sink))
    if worker is None or worker.sink is not sink:
        with _lock:
            worker = _workers.get(id(sink))
            if worker is None or worker.sink is not sink:
                worker = SinkWorker(sink)
                # Two sinks of one name (two lambdas) are told apart in stats and logs.
                taken = {w.name for w in _workers.values()}
                base, n = worker.name, 1
                while worker.name in taken:
                    n += 1
                    worker.name = f"{base}#{n}"
                _workers[id(sink)] = worker
    return worker


def stop_worker(
    sink: object, timeout: float | None, then: Callable[[], object] | None = None
) -> None:
    """Stop the worker of one sink (after its queue drains), then run ``then``: see
    :meth:`SinkWorker.stop`."""
    with _lock:
        worker = _workers.pop(id(sink), None)
    if worker is not None and worker.sink is sink:
        worker.stop(timeout, then)
    elif then is not None:
        then()


def stop_workers(timeout: float | None) -> None:
    """Stop every sink worker, each after its queue drains."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))


def reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _workers.clear()
    _retiring.clear()  # the parent's threads: none of them runs here
