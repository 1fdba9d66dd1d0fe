"""The one place candidates run: bounded worker lanes, timeouts, the emitter, fork and exit.

Nothing here runs on the caller's thread except :meth:`Lane.put` and :func:`start_task`, which
only enqueue.  Every piece of user code on the shadow side (candidate, adapt, key, context,
comparator, sink) runs inside :func:`guard` or an equivalent ``except BaseException`` in a
worker, so nothing it raises can travel back to the live path.

Threads:

* one lane per experiment, up to ``max_concurrency`` worker threads, started lazily and ended
  after a while idle; a hung candidate keeps its thread (and its slot) until it really ends;
* one timer thread that settles a job as ``timeout`` at its deadline (DESIGN I8);
* one emitter thread that compares, builds the :class:`ShadowResult` and hands it to the sinks;
* one background event loop thread for async candidates of sync live functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import inspect
import itertools
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace

from ._pool import ProcessPool
from ._result import Observation, error_of

if TYPE_CHECKING:
    from ._experiment import Experiment

__all__ = ["FAILED", "Args", "Job", "Lane", "guard", "in_shadow", "log_failure"]

log = logging.getLogger("shadowdeco")

_IN_SHADOW: contextvars.ContextVar[bool] = contextvars.ContextVar("shadowdeco_in_shadow")

# How long an idle lane worker waits for work before its thread ends (seconds).
IDLE_EXIT: Final = 30.0

# Job states.  A job is settled exactly once (OPEN -> HANDED or DONE), which is what makes the
# accounting exact when a worker, the timer and close() race for the same job.
OPEN: Final = 0
HANDED: Final = 1  # given to the emitter, which will count it as emitted or dropped
DONE: Final = 2


#: What :func:`guard` returns when the guarded call raised.
FAILED: Final[Any] = object()


def guard(operation: str, experiment: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a piece of user code on the shadow side (comparator, sink, key, context).

    The one broad guard: whatever ``fn`` raises is logged with the operation and experiment,
    and :data:`FAILED` is returned for the caller to count.  BaseException too: a sink's
    SystemExit must not end the emitter thread.  Only a Ctrl-C on the main thread (an async
    task's key or context callable) is let through: it is the user's, not the shadow's.
    """
    try:
        return fn(*args)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise
        log_failure(operation, experiment)
        return FAILED
    except BaseException:  # noqa: BLE001 - user code must never end a shadowdeco thread
        log_failure(operation, experiment)
        return FAILED


# A sink failing on every result (a full disk) must not flood the log: each kind of failure
# is logged with its traceback at most once a minute, with a count of the ones not shown.
_LOG_EVERY: Final = 60.0
_failures: dict[tuple[str, str, str], list[float]] = {}


def log_failure(operation: str, experiment: str) -> None:
    """Log the exception being handled, with its traceback, at most once a minute per kind."""
    error = sys.exc_info()[1]
    key = (operation, experiment, type(error).__qualname__)
    now = time.monotonic()
    seen = _failures.get(key)
    if seen is not None and now - seen[0] < _LOG_EVERY:
        seen[1] += 1
        return
    suppressed = int(seen[1]) if seen is not None else 0
    _failures[key] = [now, 0]
    more = f" ({suppressed} more like it since the last report)" if suppressed else ""
    log.error(
        "shadowdeco: %s of experiment %r raised%s", operation, experiment, more, exc_info=True
    )


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread | None:
    """Start a daemon thread; None when Python no longer allows new threads (at exit, 3.12+)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        return None
    return thread


def in_shadow() -> bool:
    """True while shadowdeco runs a candidate (and in what the candidate calls)."""
    return _IN_SHADOW.get(False)


class Args:
    """What ``adapt`` returns to call the candidate with several or keyword arguments.

    >>> Args(1, 2, scale=3)
    Args(1, 2, scale=3)
    """

    __slots__ = ("args", "kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Args({', '.join(parts)})"


class Job:
    """One sampled call on its way from the live path to the sinks."""

    __slots__ = (
        "__weakref__",
        "args",
        "cancel",
        "candidate",
        "context",
        "ctx",
        "exp",
        "gen",
        "inputs",
        "instance",
        "key",
        "kwargs",
        "live_error",
        "live_value",
        "queue_s",
        "state",
        "t0",
        "t1",
        "trace",
    )

    def __init__(
        self,
        exp: Experiment,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
    ) -> None:
        self.exp = exp
        self.candidate = exp._candidate  # a swap while this call runs does not affect it
        self.gen = exp._generation
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.ctx = ctx
        self.t0 = 0.0  # live call start, and end: perf_counter()
        self.t1 = 0.0
        self.live_value: Any = None
        self.live_error: tuple[str, str] | None = None
        self.state = OPEN
        self.queue_s: float | None = None
        self.cancel: Callable[[], object] | None = None
        # Filled in by Experiment._before_run, in the caller's context copy, before the
        # candidate can touch the inputs.
        self.key: Any = None
        self.context: Any = None
        self.inputs: Any = None
        self.trace: tuple[str, str] | None = None


# --------------------------------------------------------------------------------------------
# Running one candidate call


def resolve(job: Job) -> Callable[..., Any]:
    """The callable to run: the candidate, or the method of that name on the live instance.

    A missing method is found here, at the first call: logged once per experiment and
    recorded as a candidate error (AttributeError), never raised into the live path.
    """
    candidate = job.candidate
    if not isinstance(candidate, str):
        fn: Callable[..., Any] = candidate
        return fn
    method = getattr(job.instance, candidate, None) if job.instance is not None else None
    if not callable(method):
        owner = "the call (no instance)" if job.instance is None else type(job.instance).__name__
        message = f"candidate method {candidate!r} not found on {owner}"
        job.exp._warn_once(message)
        raise AttributeError(message)  # noqa: TRY004 - what getattr itself would raise
    return method  # type: ignore[no-any-return]


def prepare_call(job: Job) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """Record what the result needs, resolve the candidate and apply ``adapt``.

    Runs in the job's context copy; raises what the user's code raises.
    """
    job.exp._before_run(job)
    fn = resolve(job)
    args, kwargs = job.args, job.kwargs
    adapt = job.exp._adapt
    if adapt is not None:
        adapted = adapt(*args, **kwargs)
        if isinstance(adapted, Args):
            args, kwargs = adapted.args, adapted.kwargs
        else:
            args, kwargs = (adapted,), {}
    return fn, args, kwargs


def call_timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``fn`` marked as shadow; module level so a process pool can pickle it.

    Returns ``("ok", value, duration)`` or ``("error", (type, message), duration)``: the error
    travels as text because exceptions do not always pickle.
    """
    # Reset afterwards: in a user's pool thread the mark must not outlive the candidate.
    token = _IN_SHADOW.set(True)
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the candidate's own thread: record, never raise
        return "error", error_of(exc), time.perf_counter() - start
    finally:
        _IN_SHADOW.reset(token)
    return "ok", value, time.perf_counter() - start


def observation(outcome: tuple[str, Any, float]) -> Observation:
    status, payload, duration = outcome
    if status != "ok":
        return Observation("error", None, payload, duration)
    if asyncio.iscoroutine(payload):
        # A coroutine as the *value* (an async candidate returning one un-awaited): close it,
        # or it would warn "never awaited" wherever the result ends up.
        payload.close()
        return Observation("error", None, _UNAWAITED, duration)
    return Observation("ok", payload, None, duration)


_UNAWAITED: Final = ("TypeError", "the candidate returned a coroutine that was never awaited")


def run_in_thread(job: Job) -> Observation | None:
    """Run the job's candidate in the calling (worker) thread, inside the job's context copy.

    None when the sample could not run at all (its executor is shut down).
    """
    obs: Observation | None = job.ctx.run(_run_in_context, job)
    return obs


def _run_in_context(job: Job) -> Observation | None:
    with shadow_span(job) as span:
        start = time.perf_counter()
        try:
            fn, args, kwargs = prepare_call(job)
        except BaseException as exc:  # noqa: BLE001 - resolving / adapting is candidate work
            obs: Observation | None = Observation(
                "error", None, error_of(exc), time.perf_counter() - start
            )
        else:
            executor = job.exp._executor
            if executor is not None:
                obs = _run_in_executor(job, executor, fn, args, kwargs)
            else:
                outcome = call_timed(fn, args, kwargs)
                if outcome[0] == "ok" and asyncio.iscoroutine(outcome[1]):
                    # An async candidate of a sync live function: run it on the background
                    # loop, holding this worker (so a concurrency slot) until it ends.
                    obs = _run_on_background_loop(job, outcome[1])
                else:
                    obs = observation(outcome)
        span.set_attribute("shadowdeco.candidate.status", obs.status if obs else "dropped")
        return obs


_tracer = trace.get_tracer("shadowdeco")


def shadow_span(job: Job) -> Any:
    """The candidate's span: a child of the live call's span, marked as shadow (DESIGN I6).

    Records the live span's ids on the job first: the result links to the live call.
    """
    live = trace.get_current_span().get_span_context()
    if not live.is_valid:
        # The live call is not traced: no span to be a child of, and a no-op span would
        # still cost several microseconds a call.
        return contextlib.nullcontext(trace.INVALID_SPAN)
    job.trace = (format(live.trace_id, "032x"), format(live.span_id, "016x"))
    return _tracer.start_as_current_span(
        f"shadow {job.exp.name}",
        attributes={"shadowdeco.shadow": True, "shadowdeco.experiment": job.exp.name},
        record_exception=False,
        set_status_on_exception=False,
    )


def _run_in_executor(
    job: Job,
    executor: Executor,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Observation | None:
    start = time.perf_counter()
    if isinstance(executor, ProcessPool):
        # Straight from this worker thread to a worker process: no extra threads take the
        # GIL on the way.  A dead worker raises BrokenProcessPool: recorded like any error.
        try:
            return observation(executor.call(call_timed, fn, args, kwargs))
        except RuntimeError as exc:
            if isinstance(exc, BrokenExecutor):
                return Observation("error", None, error_of(exc), time.perf_counter() - start)
            return None  # the pool was shut down: the sample cannot run any more
        except BaseException as exc:  # noqa: BLE001 - an unpicklable candidate or inputs...
            return Observation("error", None, error_of(exc), time.perf_counter() - start)
    try:
        if isinstance(executor, ProcessPoolExecutor):
            future = executor.submit(call_timed, fn, args, kwargs)
        else:  # threads in this process: run in (a copy of) the caller's context (I6)
            future = executor.submit(contextvars.copy_context().run, call_timed, fn, args, kwargs)
    except BrokenExecutor as exc:  # a crashed pool: the candidate's failure, recorded
        return Observation("error", None, error_of(exc), time.perf_counter() - start)
    except RuntimeError:
        # The pool was shut down, e.g. by concurrent.futures' own exit hook, which runs
        # before ours: the sample cannot run any more.
        return None
    try:
        job.cancel = future.cancel
        outcome = future.result()
    except BaseException as exc:  # noqa: BLE001 - a broken pool, an unpicklable candidate...
        return Observation("error", None, error_of(exc), time.perf_counter() - start)
    return observation(outcome)


def _run_on_background_loop(job: Job, coro: Coroutine[Any, Any, Any]) -> Observation:
    start = time.perf_counter()
    try:
        future = asyncio.run_coroutine_threadsafe(contained(coro), background_loop())
        job.cancel = future.cancel
        outcome = future.result()
    except BaseException as exc:  # noqa: BLE001 - cancelled at its timeout, or the loop died
        return Observation("error", None, error_of(exc), time.perf_counter() - start)
    return observation((outcome[0], outcome[1], time.perf_counter() - start))


async def contained(coro: Coroutine[Any, Any, Any]) -> tuple[str, Any]:
    """Await a candidate coroutine, keeping what it raises inside this coroutine.

    asyncio re-raises KeyboardInterrupt and SystemExit out of the event loop when a task lets
    them escape, which would stop the caller's loop: they must never leave this frame.
    Cancellation is the one exception that passes, so a timeout can still cancel.
    """
    _IN_SHADOW.set(True)
    try:
        return "ok", await coro
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - contained and recorded, never re-raised
        return "error", error_of(exc)


# --------------------------------------------------------------------------------------------
# Lanes: per-experiment worker threads


class Lane:
    """An experiment's bounded share of the worker pool.

    ``waiting`` counts jobs admitted but not yet started (their live call may still run), and
    is bounded by ``max_queue``; at most ``max_concurrency`` threads run candidates.  All
    counters are guarded by the experiment's lock.
    """

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        self.queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.waiting = 0
        self.queued = 0
        self.workers: set[threading.Thread] = set()
        self.spawning = 0
        self.idle = 0
        self.running: set[Job] = set()
        self.tasks: dict[asyncio.Task[None], Job] = {}
        self.semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self.semaphores = weakref.WeakKeyDictionary()

    def put(self, job: Job) -> None:
        """Enqueue a job whose live call has ended (called on the live path)."""
        exp = self.exp
        start = False
        with exp._lock:
            closed = exp._closed  # set under this lock by close(), before it drains
            if closed:
                self.waiting -= 1
            else:
                self.queue.put(job)
                self.queued += 1
                if self.queued > self.idle and self.threads() < exp._max_concurrency:
                    start = True
                    self.idle += 1
                    self.spawning += 1
        if closed:
            exp._settle_drop(job, "shutdown")
            return
        if start:
            self._start_worker()

    def _start_worker(self) -> None:
        exp = self.exp
        # Registered before it runs, so _work can find and remove itself under the lock.
        ready = threading.Event()

        def work() -> None:
            ready.wait()
            self._work()

        thread = start_daemon(work, f"shadowdeco-{exp.name}")
        with exp._lock:
            self.spawning -= 1
            if thread is not None:
                self.workers.add(thread)
                orphaned = []
            else:  # at interpreter exit: no new threads; without any worker, nothing runs
                self.idle -= 1
                orphaned = [] if self.threads() else self._take_queued_locked()
        if thread is not None:
            ready.set()
        for job in orphaned:
            exp._settle_drop(job, "shutdown")

    def threads(self) -> int:
        """Worker threads running or being started (under the experiment's lock)."""
        return len(self.workers) + self.spawning

    def _take_queued_locked(self) -> list[Job]:
        """Empty the queue (stop markers included); the jobs it held, uncounted from it."""
        jobs: list[Job] = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                self.queued -= 1
                self.waiting -= 1
                jobs.append(job)

    def _work(self) -> None:
        exp = self.exp
        lock = exp._lock
        while True:
            try:
                job = self.queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with lock:
                    if self.queued == 0:
                        self.workers.discard(threading.current_thread())
                        self.idle -= 1
                        return
                continue
            with lock:
                if job is None:  # told to stop (close / shutdown)
                    self.workers.discard(threading.current_thread())
                    self.idle -= 1
                    return
                self.queued -= 1
                self.idle -= 1
                self.waiting -= 1
                if job.state != OPEN:  # settled while it waited (close)
                    self.idle += 1
                    continue
                self.running.add(job)
            try:
                job.queue_s = time.perf_counter() - job.t1
                timer.schedule(job)
                obs = run_in_thread(job)
                if obs is None:
                    exp._settle_drop(job, "shutdown")
                else:
                    # A lane worker builds the result itself: one thread hand-off less per
                    # result (the emitter thread serves timeouts and async candidates).
                    exp._deliver(job, obs, here=True)
                del obs
            finally:
                with lock:
                    self.running.discard(job)
                    self.idle += 1
            # An idle worker must not keep the last job (its inputs, sinks, files) alive.
            del job

    def stop_threads(self) -> list[threading.Thread]:
        """Ask every worker to end (busy ones after their job); returns them, to join."""
        with self.exp._lock:
            workers = list(self.workers)
        for _ in workers:
            self.queue.put(None)
        return workers

    def forget_task(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)

    def drain(self) -> list[Job]:
        """Every job not yet settled: queued, running, and async tasks'."""
        with self.exp._lock:
            jobs = self._take_queued_locked()
            jobs.extend(self.running)
        jobs.extend(self.tasks.values())
        return jobs

    def reset_after_fork(self) -> None:
        self.queue = queue.SimpleQueue()
        self.waiting = self.queued = self.idle = self.spawning = 0
        self.workers = set()
        self.running = set()
        self.tasks = {}
        self.semaphores = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# Async candidates of async live functions: referenced tasks on the caller's loop


def start_task(job: Job, loop: asyncio.AbstractEventLoop) -> None:
    """Run an async candidate as a task on the caller's running loop (live path: only spawns)."""
    lane = job.exp._lane
    # Created inside the call's context snapshot, so the task runs in a copy of it (I6).
    task = job.ctx.run(loop.create_task, _task_main(job, lane))
    # The loop holds tasks only weakly: keep a reference until the task is done (DESIGN I7).
    lane.tasks[task] = job
    task.add_done_callback(lane.forget_task)


async def _task_main(job: Job, lane: Lane) -> None:
    exp = job.exp
    loop = asyncio.get_running_loop()
    semaphore = lane.semaphores.get(loop)
    if semaphore is None:
        semaphore = lane.semaphores[loop] = asyncio.Semaphore(exp._max_concurrency)
    waiting = True
    try:
        async with semaphore:
            with exp._lock:
                lane.waiting -= 1
                waiting = False
                if job.state != OPEN:
                    return
            job.queue_s = time.perf_counter() - job.t1
            await _run_task(job, exp.timeout)
    except asyncio.CancelledError:
        if waiting:  # cancelled in the queue: give its place back
            with exp._lock:
                lane.waiting -= 1
        # Not our own cancellation (that one is caught in _run_task): the loop is closing
        # under us, e.g. asyncio.run() cancelling what is left.  Count it, then let it go.
        exp._settle_drop(job, "loop_closed")
        raise


async def _run_task(job: Job, timeout: float | None) -> None:
    with shadow_span(job) as span:
        obs = await _await_candidate(job, timeout)
        span.set_attribute("shadowdeco.candidate.status", obs.status if obs else "timeout")
    if obs is not None:
        job.exp._deliver(job, obs)


async def _await_candidate(job: Job, timeout: float | None) -> Observation | None:
    """The candidate's observation, or None when it timed out (already settled)."""
    _IN_SHADOW.set(True)
    start = time.perf_counter()
    try:
        fn, args, kwargs = prepare_call(job)
        coro = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the candidate failed before it awaited
        return Observation("error", None, error_of(exc), time.perf_counter() - start)
    inner = asyncio.ensure_future(contained(coro))
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout)
    except asyncio.CancelledError:
        # The loop is going away (asyncio.run cancels what is left): the candidate may not
        # even have started; close it so it does not warn "never awaited".
        inner.cancel()
        if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()
        raise
    if not done:
        job.exp._settle_timeout(job, time.perf_counter() - start)
        # The task still holds its slot (the semaphore) until it really ends (DESIGN I8).
        inner.cancel()
        await asyncio.wait({inner})
        return None
    duration = time.perf_counter() - start
    if inner.cancelled():
        return Observation("error", None, ("CancelledError", ""), duration)
    status, payload = inner.result()
    return observation((status, payload, duration))


# --------------------------------------------------------------------------------------------
# The timer: settles jobs as "timeout" at their deadline


class _Timer:
    """Settles running jobs as ``timeout`` at their deadline.

    The heap holds jobs weakly: a job that finished is freed with its inputs at once, not at
    its deadline, and nothing here keeps a user's objects alive (or unflushed) at exit.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, weakref.ref[Job]]] = []
        self._seq = itertools.count()
        self._compact_at = 1024
        self._thread: threading.Thread | None = None

    def schedule(self, job: Job) -> None:
        timeout = job.exp.timeout
        if timeout is None:
            return
        deadline = time.perf_counter() + timeout
        with self._cond:
            heap = self._heap
            # Entries of finished jobs stay until their deadline; compact when they pile up
            # (many fast calls under a long timeout) so memory stays bounded.
            if len(heap) >= self._compact_at:
                heap[:] = [entry for entry in heap if _is_open(entry[2]())]
                heapq.heapify(heap)
                self._compact_at = max(1024, 2 * len(heap))
            heapq.heappush(heap, (deadline, next(self._seq), weakref.ref(job)))
            if self._thread is None:
                self._thread = start_daemon(self._run, "shadowdeco-timer")
            elif heap[0][2]() is job:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.perf_counter()
                    if self._heap and self._heap[0][0] <= now:
                        job = heapq.heappop(self._heap)[2]()
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            if job is not None and job.state == OPEN:
                job.exp._settle_timeout(job, job.exp.timeout)
            del job

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


def _is_open(job: Job | None) -> bool:
    return job is not None and job.state == OPEN


timer = _Timer()


# --------------------------------------------------------------------------------------------
# The emitter: comparison, the result, the sinks


class _Emitter:
    """One thread that compares, builds each result and hands it to the sinks' workers.

    Bounded: past ``max_pending`` waiting results a new one is dropped as ``backlog`` (a slow
    comparator), so memory stays bounded.  Sinks have their own bounded queues (_delivery).
    """

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[tuple[Job, Observation]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> bool:
        with self._lock:
            if self._thread is None:
                self._thread = start_daemon(self._run, "shadowdeco-emitter")
            return self._thread is not None

    def put(self, job: Job, obs: Observation) -> None:
        if not self.ensure_started():
            # At interpreter exit with no emitter thread yet: emit here, on this worker.
            job.exp._emit(job, obs)
            return
        with self._lock:
            full = self._pending >= self.max_pending
            if not full:
                self._pending += 1
        if full:
            job.exp._drop_handed(job, "backlog")
        else:
            self._queue.put((job, obs))

    def _run(self) -> None:
        while True:
            job, obs = self._queue.get()
            try:
                emit(job, obs)
            finally:
                with self._lock:
                    self._pending -= 1
            del job, obs  # while waiting, hold no result (nor what its sinks reference)

    def reset_after_fork(self) -> None:
        self.__init__(self.max_pending)  # type: ignore[misc]


emitter = _Emitter()


def emit(job: Job, obs: Observation) -> None:
    """Compare, build the result and hand it to the sinks' threads, on this thread."""
    try:
        job.exp._emit(job, obs)
    except BaseException:
        log.exception("shadowdeco: emitting a result of %s failed", job.exp.name)
        if job.state != DONE:
            job.exp._drop_handed(job, "internal_error")


# --------------------------------------------------------------------------------------------
# The background event loop for async candidates of sync live functions

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:  # stopped by shutdown(): cancel what is left, then close
                    tasks = asyncio.all_tasks(loop)
                    for task in tasks:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                    loop.close()

            threading.Thread(target=serve, name="shadowdeco-loop", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def stop_background_loop() -> None:
    global _loop
    with _loop_lock:
        loop, _loop = _loop, None
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


# --------------------------------------------------------------------------------------------
# Fork


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start from scratch, lazily.

    Runs before the experiments' own hook (registered later, by _experiment).
    """
    global _loop_lock, _loop
    _loop_lock = threading.Lock()
    _loop = None
    timer.reset_after_fork()
    emitter.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
