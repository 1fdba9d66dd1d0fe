"""The one place candidates run: bounded worker lanes, timeouts, the emitter, fork and exit.

Nothing here runs on the caller's thread except :meth:`Lane.put` and :func:`start_task`, which
only enqueue, and take no lock a background thread holds (see :class:`Lane`).  Every piece of
user code on the shadow side (candidate, adapt, key, context, comparator, sink) runs inside
:func:`guard` or an equivalent ``except BaseException`` in a worker, so nothing it raises can
travel back to the live path.

Threads:

* one lane per experiment: one worker thread while its candidates are fast, up to
  ``max_concurrency`` while they are slow or stuck, started lazily and ended after a while
  idle; a hung candidate keeps its thread (and its slot) until it really ends; a lane worker
  compares, builds the :class:`ShadowResult` and hands it to the sinks itself;
* one timer thread that settles a job as ``timeout`` at its deadline (DESIGN I8) and adds a
  worker to a lane whose queue waits behind a stuck candidate;
* one emitter thread that does the same as a lane worker for timeouts and async candidates;
* one background event loop thread for async candidates of sync live functions.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import BrokenExecutor, CancelledError, Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace

from ._pool import Call, PoolClosed, ProcessPool
from ._result import Observation, error_of, observation_of

if TYPE_CHECKING:
    from ._experiment import Experiment

__all__ = ["FAILED", "Args", "Job", "Lane", "Waited", "guard", "in_shadow", "log_failure"]

log = logging.getLogger("shadowdeco")

T = TypeVar("T")

_IN_SHADOW: contextvars.ContextVar[bool] = contextvars.ContextVar("shadowdeco_in_shadow")

# How long an idle lane worker waits for work before its thread ends (seconds).
IDLE_EXIT: Final = 30.0

# How long a background thread that emptied its queue waits before it blocks on it, while its
# items come close together (seconds): see Intake.take().  A result reaches its sinks at most
# this much later.
LINGER: Final = 0.001

# A lane adds worker threads while most of its candidate runs take this long (seconds), or
# while jobs wait and every running one has been running for STUCK: ten switch intervals, so
# that a run which only lost the GIL to other threads for a while does not look stuck.  See
# Lane.
SLOW_JOB: Final = 100e-6
STUCK: Final = 10 * sys.getswitchinterval()
_ALPHA: Final = 1 / 16

# The most results a lane worker holds before it hands them over to the sinks: see
# Lane._run_one.
HELD: Final = 64

# The most jobs a lane sends to a ProcessPool worker in one message (see run_in_pool); fewer
# when the candidate's runs are long against the timeout, since a batch's jobs run one after
# another but their timeouts count from the batch's start.
BATCH: Final = 64

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

#: Experiments whose failures are neither logged nor counted by the limit above (their stats
#: still count them): shadowdeco.testing's assert_isolated provokes failures on purpose, and
#: a real one right after must still be logged.
quiet: set[str] = set()


def log_failure(operation: str, experiment: str) -> None:
    """Log the exception being handled, with its traceback, at most once a minute per kind."""
    if experiment in quiet:
        return
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


class Waited(threading.Condition):
    """A condition that knows whether anyone waits on it: the notifying side, which may run
    once per result, skips its check and the (Python-level) ``notify_all`` when nobody does."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.waiters = 0  # under the lock

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        self.waiters += 1
        try:
            return super().wait_for(predicate, timeout)
        finally:
            self.waiters -= 1


_sleep = time.sleep  # Intake's linger; a name of its own, so a test can watch it


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class Parked:
    """The consumers of one queue that wait for an item, each on a lock of its own, the last
    one to wait on top: :meth:`wake`, called after each put, wakes that one.

    A lane's sparse jobs then go to the worker that ran last, its caches and a URL
    candidate's kept-alive connection still warm, while the others sleep on and end after
    :data:`IDLE_EXIT`.  Waiting on the queue itself, workers are woken first come, first
    served: once a burst of slow jobs had grown a lane to four workers, its sparse jobs ran
    on each by turns for good (slow candidates keep their workers), each connection idle
    four times as long (past a server's keep-alive timeout, it reconnects).  (The CPU a
    mirror costs a live server, ``benchmarks/middleware.py``, moved no more than its noise.)
    """

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[threading.Lock] = []  # each held: released to wake its thread

    def wake(self) -> None:
        """Wake the consumer that waited last, if any waits (after a put: no lock taken)."""
        waiters = self.waiters
        if waiters:
            try:
                waiter = waiters.pop()
            except IndexError:  # another put woke the last one meanwhile
                return
            waiter.release()

    def take(self, items: queue.SimpleQueue[T], intake: Intake[T], timeout: float | None) -> T:
        """The next item of ``items``, waiting on ``intake.waiter`` (held, this thread's own)
        for a :meth:`wake`; ``queue.Empty`` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = self.waiters
        while True:
            waiter = intake.waiter
            waiters.append(waiter)
            try:
                item = items.get_nowait()  # put before this thread waited: no wake for it
            except queue.Empty:
                left = -1 if deadline is None else max(0.0, deadline - time.monotonic())
                woken = waiter.acquire(timeout=left)
                if not woken:
                    self._leave(intake)
                try:
                    return items.get_nowait()
                except queue.Empty:
                    if not woken:
                        raise
                    continue  # another thread took it first: wait again
            self._leave(intake)
            return item

    def _leave(self, intake: Intake[Any]) -> None:
        """Stop waiting: off the list, or, if a put took it off meanwhile, take the wake that
        comes (the lock held again, for the next wait).  A wake that does not come (the put's
        thread interrupted between taking the lock off and releasing it: a Ctrl-C) leaves the
        lock to it, and the thread a fresh one."""
        waiter = intake.waiter
        try:
            self.waiters.remove(waiter)
        except ValueError:
            if not waiter.acquire(timeout=1.0):
                intake.waiter = _held_lock()


class Intake(Generic[T]):
    """How one consumer thread takes items off its queue: :meth:`take`.  Several consumers
    of one queue share a :class:`Parked` (the queue's puts wake through it)."""

    __slots__ = ("busy", "items", "parked", "taken", "waiter")

    def __init__(self, items: queue.SimpleQueue[T], parked: Parked | None = None) -> None:
        self.items = items
        self.busy = True  # the last wait was shorter than a linger
        self.taken = 0  # items taken since the thread last waited
        self.parked = parked
        self.waiter = _held_lock()  # this thread's, held but while a wake is on its way

    def take(self, timeout: float | None = None) -> T:
        """The next item: at once if one waits; ``queue.Empty`` past ``timeout``.

        A thread blocked on an empty queue is woken, and takes the GIL from the caller, for
        every item put: under load, two context switches per result.  So while items come
        close together, the thread lingers :data:`LINGER` before it blocks, and takes what
        came meanwhile in one turn.  Close together: its last wait was shorter than a
        linger, or it found several items when it woke (a burst that queued while another
        thread held the GIL).  When items come one at a time and further apart, it blocks at
        once: a linger would find nothing and only add a sleep per item (tens of microseconds
        of CPU on a VM, on each of the lane and sink threads).
        """
        items = self.items
        try:
            item = items.get_nowait()
        except queue.Empty:
            linger = self.busy or self.taken > 1
            self.taken = 0
            item = self._wait(linger, timeout)
        self.taken += 1
        return item

    def take_many(self, limit: int) -> list[T]:
        """The next item as :meth:`take` gives it, and up to ``limit - 1`` more that already
        wait; a ``None`` (a stop marker) ends the list."""
        batch = [self.take()]
        items = self.items
        while len(batch) < limit and batch[-1] is not None:
            try:
                batch.append(items.get_nowait())
            except queue.Empty:
                break
        self.taken += len(batch) - 1
        return batch

    def _wait(self, linger: bool, timeout: float | None) -> T:
        items = self.items
        if linger:
            _sleep(LINGER)
            try:
                return items.get_nowait()
            except queue.Empty:
                pass
        start = time.perf_counter()
        try:
            if self.parked is not None:
                return self.parked.take(items, self, timeout)
            return items.get(timeout=timeout)
        finally:
            self.busy = time.perf_counter() - start < LINGER


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
        "started",
        "state",
        "t0",
        "t1",
        "trace",
    )

    def __init__(  # noqa: PLR0917 - built from a QueuedCall: Job(exp, *call)
        self,
        exp: Experiment,
        candidate: Any,  # exp's when the call was sampled: a swap since does not affect it
        gen: int,  # exp's generation then (a fork since: the parent's call, not the child's)
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
        t0: int = 0,  # live call start, and end: perf_counter_ns()
        t1: int = 0,
        live_value: Any = None,
        live_error: tuple[str, str] | None = None,
    ) -> None:
        self.exp = exp
        self.candidate = candidate
        self.gen = gen
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.ctx = ctx
        self.t0 = t0
        self.t1 = t1
        self.live_value = live_value
        self.live_error = live_error
        self.state = OPEN
        self.queue_s: float | None = None
        self.started = 0.0  # when a lane worker began the candidate call: perf_counter()
        self.cancel: Callable[[], object] | None = None
        # Filled in by Experiment._before_run, in the caller's context copy, before the
        # candidate can touch the inputs.
        self.key: Any = None
        self.context: Any = None
        self.inputs: Any = None
        self.trace: tuple[str, str, bool] | None = None  # the live span: ids, sampled


#: A sampled sync call as the decorator's wrapper queues it once the live call returned:
#: a :class:`Job`'s fields after ``exp`` (candidate, gen, instance, args, kwargs, ctx, t0, t1,
#: live_value, live_error).  The lane worker builds the Job (:meth:`Lane.job_of`): a tuple
#: costs the caller a tenth of what the Job's ``__init__`` does.
QueuedCall = tuple[
    Any,
    int,
    Any,
    tuple[Any, ...],
    dict[str, Any],
    contextvars.Context,
    int,
    int,
    Any,
    "tuple[str, str] | None",
]


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
    start = time.perf_counter_ns()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the candidate's own thread: record, never raise
        return "error", error_of(exc), seconds_since(start)
    finally:
        _IN_SHADOW.reset(token)
    return "ok", value, (time.perf_counter_ns() - start) / 1e9  # seconds_since(), inlined


def seconds_since(start: int) -> float:
    """Seconds from ``start`` (a ``time.perf_counter_ns()``) until now, in whole nanoseconds.

    Every duration in a result is measured so: its JSON is ``2.346e-06``, not the
    ``2.3456789012345e-06`` a difference of two ``perf_counter()`` floats gives (digits below
    the clock's resolution), and the shorter number takes a third less time to write.
    """
    return (time.perf_counter_ns() - start) / 1e9


def observation(outcome: tuple[str, Any, float]) -> Observation:
    status, payload, duration = outcome
    if status != "ok":
        return observation_of("error", None, payload, duration)
    if _is_coroutine(payload):
        # A coroutine as the *value* (an async candidate returning one un-awaited): close it,
        # or it would warn "never awaited" wherever the result ends up.
        payload.close()
        return observation_of("error", None, _UNAWAITED, duration)
    return observation_of("ok", payload, None, duration)


def raised(exc: BaseException, start: int) -> Observation:
    """The observation of a candidate that raised ``exc``, begun at ``start`` (perf_counter_ns)."""
    return observation_of("error", None, error_of(exc), seconds_since(start))


_UNAWAITED: Final = ("TypeError", "the candidate returned a coroutine that was never awaited")

# Types whose values were found not to be coroutines: asyncio.iscoroutine() walks an ABC
# check for them on every call (about a microsecond).  Bounded, for types made on the fly.
_NOT_COROUTINE: set[type] = set()


def _is_coroutine(value: object) -> bool:
    cls = type(value)
    if cls in _NOT_COROUTINE:
        return False
    if asyncio.iscoroutine(value):
        return True
    if len(_NOT_COROUTINE) < 1024:
        _NOT_COROUTINE.add(cls)
    return False


def run_in_thread(job: Job) -> Observation | None:
    """Run the job's candidate in the calling (worker) thread, inside the job's context copy.

    None when the sample could not run at all (its executor is shut down).
    """
    obs: Observation | None = job.ctx.run(_run_in_context, job)
    return obs


def _run_in_context(job: Job) -> Observation | None:
    span = candidate_span(job)
    if span is None:
        return _run_candidate(job)
    with span as current:
        obs = _run_candidate(job)
        current.set_attribute("shadowdeco.candidate.status", obs.status if obs else "dropped")
        return obs


def _run_candidate(job: Job) -> Observation | None:
    start = time.perf_counter_ns()
    try:
        fn, args, kwargs = prepare_call(job)
    except BaseException as exc:  # noqa: BLE001 - resolving / adapting is candidate work
        return raised(exc, start)
    executor = job.exp._executor
    if executor is not None:
        return _run_in_executor(job, executor, fn, args, kwargs)
    status, payload, duration = call_timed(fn, args, kwargs)
    if status != "ok":
        return observation_of("error", None, payload, duration)
    if _is_coroutine(payload):
        # An async candidate of a sync live function: run it on the background loop,
        # holding this worker (so a concurrency slot) until it ends.
        return _run_on_background_loop(job, payload)
    return observation_of("ok", payload, None, duration)  # observation(), checked already


_tracer = trace.get_tracer("shadowdeco")


def candidate_span(job: Job) -> Any:
    """The candidate's span, a child of the live call's span, marked as shadow (DESIGN I6);
    None when the live call is not traced (a no-op span would still cost microseconds).

    Records the live span's ids on the job first: the result links to the live call.
    """
    if not otel_context.get_current():  # nothing in OpenTelemetry's context: no span
        return None
    live = trace.get_current_span().get_span_context()
    if not live.is_valid:
        return None
    job.trace = (
        format(live.trace_id, "032x"),
        format(live.span_id, "016x"),
        live.trace_flags.sampled,
    )
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
    start = time.perf_counter_ns()
    if isinstance(executor, ProcessPool):
        # Straight from this worker thread to a worker process: no extra threads take the
        # GIL on the way.  A dead worker raises BrokenProcessPool: recorded like any error.
        try:
            return observation(executor.call(call_timed, fn, args, kwargs))
        except PoolClosed:
            return None  # the pool was shut down: the sample cannot run any more
        except BaseException as exc:  # noqa: BLE001 - an unpicklable candidate or inputs...
            return raised(exc, start)
    try:
        if isinstance(executor, ProcessPoolExecutor):
            future = executor.submit(call_timed, fn, args, kwargs)
        else:  # threads in this process: run in (a copy of) the caller's context (I6)
            future = executor.submit(contextvars.copy_context().run, call_timed, fn, args, kwargs)
    except BrokenExecutor as exc:  # a crashed pool: the candidate's failure, recorded
        return raised(exc, start)
    except RuntimeError:
        # The pool was shut down, e.g. by concurrent.futures' own exit hook, which runs
        # before ours: the sample cannot run any more.
        return None
    try:
        job.cancel = future.cancel
        outcome = future.result()
    except CancelledError:
        # Cancelled by its timeout (settled already: nothing to add), or by the executor's
        # shutdown(cancel_futures=True): the sample cannot run any more.
        return None
    except BaseException as exc:  # noqa: BLE001 - a broken pool, an unpicklable candidate...
        return raised(exc, start)
    return observation(outcome)


def run_in_pool(
    jobs: list[Job], pool: ProcessPool, arrived: Callable[[int], object] | None = None
) -> list[Observation | None]:
    """Run several jobs' candidates in one message to a worker process.

    A live thread that runs Python back to back hands the GIL to the lane's thread only when
    the interpreter makes it (every switch interval, 5 ms), and each turn switches the live
    thread out.  One call per message took three turns (send; read the answer's length; read
    the answer), and the shadow kept up with a tenth of such a live thread's calls; a batch
    takes a few turns for all the jobs that waited.  Each job is prepared in its own context
    copy, as :func:`run_in_thread` does; a job the live call's span traces runs alone (its
    span covers its own run).  None for a job that could not run (the pool is shut down).

    ``arrived(i)`` is told when ``jobs[i]``'s answer came back and its observation is in the
    list, while later jobs of the batch may still run (the lane claims it then: a later one
    that hangs does not make it a timeout).
    """
    observations: list[Observation | None] = [None] * len(jobs)
    calls: list[Call] = []
    batched: list[tuple[int, int]] = []  # (index in jobs, when it was prepared: perf_counter_ns)
    for i, job in enumerate(jobs):
        if job.ctx.run(candidate_span, job) is not None:
            observations[i] = run_in_thread(job)
            continue
        start = time.perf_counter_ns()
        prepared = job.ctx.run(_prepared, job, start)
        if isinstance(prepared, Observation):
            observations[i] = prepared
        else:
            calls.append((call_timed, prepared, {}))
            batched.append((i, start))
    if not calls:
        return observations
    answered = [False] * len(calls)

    def answer(k: int, outcome: tuple[str, Any]) -> None:
        i, start = batched[k]
        kind, value = outcome
        if kind == "returned":
            observations[i] = observation(value)
        elif not isinstance(value, PoolClosed):  # closed: the sample cannot run any more
            observations[i] = raised(value, start)
        answered[k] = True
        if arrived is not None and observations[i] is not None:
            arrived(i)

    answers: list[tuple[str, Any] | None]
    try:
        answers = list(pool.call_each(calls, arrived=answer))
    except BaseException:  # noqa: BLE001 - a call would not pickle: one by one, so only it fails
        pairs = zip(answered, calls, strict=True)
        answers = [None if done else _one_call(pool, call) for done, call in pairs]
    if len(answers) != len(calls):  # never from call_each; the lane's thread must not die of it
        lost = BrokenProcessPool("no answer came back for this call")
        answers = [*answers[: len(calls)], *[("raised", lost)] * (len(calls) - len(answers))]
    for k, outcome in enumerate(answers):
        if outcome is not None and not answered[k]:  # failed all at once, or with its worker
            answer(k, outcome)
    return observations


def _prepared(job: Job, start: int) -> tuple[Any, ...] | Observation:
    """``(fn, args, kwargs)`` for the job's candidate call, or the failure that stopped it."""
    try:
        return prepare_call(job)
    except BaseException as exc:  # noqa: BLE001 - resolving / adapting is candidate work
        return raised(exc, start)


def _one_call(pool: ProcessPool, call: Call) -> tuple[str, Any]:
    try:
        return pool.call_each([call])[0]
    except BaseException as exc:  # noqa: BLE001 - an unpicklable candidate or inputs
        return "raised", exc


def _run_on_background_loop(job: Job, coro: Coroutine[Any, Any, Any]) -> Observation:
    start = time.perf_counter_ns()
    ended = threading.Event()

    async def until_ended() -> tuple[str, Any]:
        try:
            return await contained(coro)
        finally:
            ended.set()

    try:
        future = asyncio.run_coroutine_threadsafe(until_ended(), background_loop())
        job.cancel = future.cancel
        try:
            outcome = future.result()
        except CancelledError:
            # Cancelled at its timeout: the future says so at once, but the task may still
            # run (clean-up, or a swallowed cancellation).  This worker, and so the slot,
            # stays taken until it ends (I8).
            ended.wait()
            raise
    except BaseException as exc:  # noqa: BLE001 - cancelled at its timeout, or the loop died
        return raised(exc, start)
    return observation((outcome[0], outcome[1], seconds_since(start)))


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

    **The live path takes no lock the background holds.**  A caller that waited for a lock
    held by a worker which had lost the GIL would wait for that worker's next turn: the
    convoy made 1.5 context switches per result and long live-latency tails.  So callers
    only put into the queue and read counters (single reads are atomic under the GIL); the
    bound on waiting jobs is kept by the experiment's live lock, which only callers take;
    everything else is under the experiment's lock, on background threads.  Where a caller
    and a worker race (a worker leaving as a job arrives; the timer ending its watch as the
    queue grows), each writes first and reads the other's state second, so one of them sees
    the other.

    ``admitted - left`` jobs wait (admitted, not yet started; their live call may still run),
    at most ``max_queue``; at most ``max_concurrency`` threads run candidates.

    Threads are added only when they can help.  Under the GIL, several threads running fast
    candidates only take turns and contend for locks (a trivial candidate ran 3x slower on four
    threads than on one), so a lane runs one worker while its candidates are fast, and adds
    workers up to ``max_concurrency`` while they are slow: most runs take :data:`SLOW_JOB` or
    more (waiting on I/O, sleeping, or heavy), or jobs wait while every running one has been
    running for :data:`STUCK` (hung; the timer looks).  Extra workers retire when the
    candidates are fast again and the queue is empty.  With a :class:`ProcessPool`, no more
    workers than it has worker processes (each runs a batch of jobs on one).
    """

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        self.queue: queue.SimpleQueue[Job | QueuedCall | None] = queue.SimpleQueue()
        self.parked = Parked()  # its idle workers: each put wakes the one idle the shortest
        executor = exp._executor
        # With a ProcessPool, a thread per worker process while candidates are slow: more
        # would only wait for one, and take the GIL from the live thread each time the pool's
        # slot is handed on.  Up to max_concurrency only for a worker stuck out of the pool.
        self.max_threads = exp._max_concurrency
        self.pooled = isinstance(executor, ProcessPool)
        if isinstance(executor, ProcessPool):
            self.max_threads = min(self.max_threads, executor.max_workers)
        #: ProcessPool lanes: the workers comparing and handing over a batch's results (out
        #: of the pool), since when (perf_counter())
        self.settling: dict[threading.Thread, float] = {}
        self.admitted = 0  # under the experiment's live lock
        self.left = 0  # admitted jobs that no longer wait: under the experiment's lock
        self.workers: set[threading.Thread] = set()
        self.spawning = 0
        self.idle = 0  # workers waiting for a job, or being started to take one
        self.running: set[Job] = set()
        self.starts = 0  # jobs begun, ever (under the lock); the timer remembers what it saw
        self.starts_seen = 0
        self.slow_share = 0.0  # a moving average of the runs that took SLOW_JOB or more
        self.slow = False
        self.run_s = 0.0  # a candidate run's length lately (seconds): see batch_limit()
        self.watched = False  # the timer looks for a stuck worker while the queue waits
        self.tasks: dict[asyncio.Task[None], Job] = {}
        self.semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self.semaphores = weakref.WeakKeyDictionary()
        #: Results claimed and not yet handed to the sinks (under the lock): see _run_one.
        self.held: list[tuple[Job, Observation]] = []

    @property
    def waiting(self) -> int:
        """Jobs admitted and not yet started (a moment's view)."""
        return self.admitted - self.left

    def put(self, job: Job | QueuedCall) -> None:
        """Enqueue a job whose live call has ended (called on the live path: no lock; what
        :meth:`Parked.wake` and :meth:`_backlog` do, inlined)."""
        exp = self.exp
        jobs = self.queue
        jobs.put(job)
        if self.parked.waiters:
            self.parked.wake()
        if exp._closed:  # close() may have drained the queue already: settle what is in it
            self.drop_queued("shutdown")
        elif (
            jobs.qsize() > self.idle
            and (threads := len(self.workers) + self.spawning) < exp._max_concurrency
        ):
            below = threads < self.max_threads  # (a ProcessPool lane's bound; else the same)
            if not threads or (self.slow and below):
                self._grow()
            elif not self.watched and (below or self.settling):
                self.watched = True
                timer.poke()

    def _grow(self) -> None:
        """Start a worker if one is still wanted (looked at again under the lock)."""
        exp = self.exp
        with exp._lock:
            start = not exp._closed and self._backlog() and (self.slow or not self.threads())
            if start:
                self._reserve_worker_locked()
        if start:
            self._start_worker()

    def _reserve_worker_locked(self) -> None:
        self.idle += 1
        self.spawning += 1

    def _start_worker(self) -> None:
        exp = self.exp
        # Registered before it runs, so _work can find and remove itself under the lock.
        ready = threading.Event()

        def work() -> None:
            ready.wait()
            self._work()

        timer.add(self)
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
        """Worker threads running or being started."""
        return len(self.workers) + self.spawning

    def job_of(self, item: Job | QueuedCall) -> Job:
        """The :class:`Job` of a queued item (a :data:`QueuedCall` is built into one)."""
        return item if type(item) is Job else Job(self.exp, *item)  # type: ignore[misc]

    def _take_queued_locked(self) -> list[Job]:
        """Empty the queue (stop markers included); the jobs it held, no longer waiting."""
        jobs: list[Job] = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                self.left += 1
                jobs.append(self.job_of(job))

    def drop_queued(self, reason: str) -> None:
        with self.exp._lock:
            jobs = self._take_queued_locked()
        for job in jobs:
            self.exp._settle_drop(job, reason)

    def _leave_locked(self, *, stopping: bool = False) -> bool:
        """Take this worker off the lane; False (it stays) when a job arrived that no other
        worker is there to take: its caller saw this worker and counted on it."""
        me = threading.current_thread()
        self.workers.discard(me)
        self.idle -= 1
        if not stopping and self.queue.qsize() and not self.threads():
            self.workers.add(me)
            self.idle += 1
            return False
        return True

    def _work(self) -> None:
        exp = self.exp
        step = self._run_batch if self.pooled else self._run_one
        intake = Intake(self.queue, self.parked)
        while True:
            try:
                item = intake.take(IDLE_EXIT)
            except queue.Empty:
                with exp._lock:
                    if not self.queue.qsize() and self._leave_locked():
                        return
                continue
            if item is None:  # told to stop (close / shutdown)
                with exp._lock:
                    self._leave_locked(stopping=True)
                    held, self.held = self.held, []
                if held:  # held when the marker was queued
                    emit_many(exp, held)
                return
            if step(self.job_of(item)):
                return
            # An idle worker must not keep the last job (its inputs, sinks, files) alive.
            del item

    def _run_one(self, job: Job) -> bool:
        """:meth:`_work`'s step: run one job's candidate on this thread.  True when this
        worker is to end (it retires).

        The worker builds the results itself (one thread hand-off less per result; the
        emitter thread serves timeouts and async candidates), and while more jobs wait it
        holds them, up to :data:`HELD`, to hand them to the sinks together when the queue
        empties: one lock per sink and one count for many results.  Should the next job
        hang, the timer hands over what is held (see :meth:`check`)."""
        exp = self.exp
        lock = exp._lock
        with lock:
            self.idle -= 1
            self.left += 1
            if job.state != OPEN:  # settled while it waited (close)
                self.idle += 1
                return False
            now = time.perf_counter_ns()
            job.started = started = now / 1e9  # perf_counter() time, for the timer
            self.running.add(job)
            self.starts += 1
        job.queue_s = (now - job.t1) / 1e9  # seconds_since(), inlined
        self._poke_if_due(started)
        try:
            obs = run_in_thread(job)
        except BaseException:  # a bug of ours: logged, counted; the worker goes on
            log.exception("shadowdeco: running a candidate of %s failed", exp.name)
            self._abandon(job)
            return False
        ran = time.perf_counter() - started
        with lock:
            self._record_locked(ran)
            claimed = obs is not None and job.state == OPEN  # not a timeout already
            if claimed:
                job.state = HANDED
                self.held.append((job, cast("Observation", obs)))
            held = self.held
            if held and (
                self.slow
                or len(held) >= HELD
                or exp._inline_jobs  # an inline call waits for its result
                or not self.queue.qsize()
            ):
                # The job stays running while the worker compares and hands over: a hung
                # comparator makes it stuck, and the timer adds a worker (see check()).
                self.held = []
                began = False
            else:  # more jobs wait: what is held is handed over later
                began = claimed and len(held) == 1
                held = []
                self.running.discard(job)
                self.idle += 1
                retire = self._retire_locked()
        if obs is None:
            exp._settle_drop(job, "shutdown")
        elif not claimed:
            log.debug("shadowdeco: %s candidate ended after it was settled", exp.name)
        elif began:
            self._watch_held()
        if held:
            emit_many(exp, held)
            with lock:
                self.running.discard(job)
                self.idle += 1
                retire = self._retire_locked()
        return retire

    def _run_batch(self, first: Job) -> bool:
        """:meth:`_work`'s step for a ProcessPool candidate: ``first`` and the jobs waiting
        behind it, up to :meth:`batch_limit`, in one message (:func:`run_in_pool`).  True when
        this worker is to end (a stop marker came, or it retires).

        The jobs' timeout counts from when a worker process is free to take them, not while
        they wait for one (a pool smaller than ``max_concurrency``, or shared); at their
        deadline the timer kills that worker process (the pool counts and replaces it), and
        the batch's jobs are timeouts (answers that came back before are not waited for).
        A new worker's start-up is not counted: the lease yields a ready worker."""
        exp = self.exp
        pool = cast("ProcessPool", exp._executor)  # a lane's executor never changes
        taken, stopping = self._waiting_behind(first)
        with exp._lock:
            self.idle -= 1
            self.left += len(taken)
            jobs = [job for job in taken if job.state == OPEN]  # not settled while it waited
            for job in jobs:
                job.started = math.inf  # not due while it waits for a worker (see check())
                self.running.add(job)
        del taken
        observations: list[Observation | None] = []
        claimed = [False] * len(jobs)  # answered in time: no timeout can settle it now

        def arrived(i: int) -> None:
            claimed[i] = exp._claim(jobs[i], HANDED)

        killed = False
        try:
            if jobs:
                try:
                    with pool._lease() as lease:  # a free worker (waits, the GIL released)
                        with exp._lock:
                            now = time.perf_counter_ns()
                            started = now / 1e9  # perf_counter() time, for the timer
                            for job in jobs:
                                job.started = started
                                job.cancel = lease.kill  # at the deadline: kill the worker
                            self.starts += len(jobs)
                        for job in jobs:
                            job.queue_s = (now - job.t1) / 1e9
                        self._poke_if_due(started)
                        observations = run_in_pool(jobs, pool, arrived)
                    killed = lease.killed
                except PoolClosed:  # the pool was shut down: the samples cannot run any more
                    observations = [None] * len(jobs)
            ready = self._settle_batch(jobs, observations, claimed, killed)
            claimed = [False] * len(jobs)
            if ready:
                emit_many(exp, ready)
        finally:
            for i, handed in enumerate(claimed):  # a bug of ours before they were built
                if handed:
                    exp._drop_handed(jobs[i], "internal_error")
            with exp._lock:
                self.settling.pop(threading.current_thread(), None)
                for i, job in enumerate(jobs):
                    self.running.discard(job)
                    obs = observations[i] if i < len(observations) else None
                    # Killed: as long as it was let run (smaller batches next).
                    ran = math.inf if obs is None else obs.duration or 0.0
                    self._record_run_locked((killed and exp.timeout) or ran)
                self.idle += 1
                stopping = self._leave_locked(stopping=True) if stopping else self._retire_locked()
        return stopping

    def _settle_batch(
        self,
        jobs: list[Job],
        observations: list[Observation | None],
        claimed: list[bool],
        killed: bool,
    ) -> list[tuple[Job, Observation]]:
        """Settle a batch's jobs that were not claimed as their answers came: those that
        could not run, and (``killed``) the timeouts; the jobs to build results of.  From
        here until the batch ends this worker is out of the pool, and stuck if it takes
        :data:`STUCK` (a comparator that hangs): see :meth:`check`."""
        exp = self.exp
        with exp._lock:
            self.settling[threading.current_thread()] = time.perf_counter()
        timeout = exp.timeout
        ready: list[tuple[Job, Observation]] = []
        for job, obs, handed in zip(jobs, observations, claimed, strict=True):
            if handed:
                ready.append((job, cast("Observation", obs)))
            elif obs is None:
                exp._settle_drop(job, "shutdown")
            elif killed:  # at the batch's deadline, which its jobs not answered share
                exp._settle_timeout(job, timeout)
            elif exp._claim_result(job):
                ready.append((job, obs))
        return ready

    def _poke_if_due(self, started: float) -> None:
        """Wake the timer when jobs begun at ``started`` are due before its next look (it
        was idle, or the timeout was shortened)."""
        timeout = self.exp._timeout  # (the attribute: once per job)
        if timeout is not None and started + timeout < timer.wake_at:
            timer.poke()

    def _abandon(self, job: Job) -> None:
        """Running ``job`` raised out of shadowdeco's own code: it counts as slow, and as
        dropped for ``internal_error``."""
        with self.exp._lock:
            self.running.discard(job)
            self.idle += 1
            self._record_locked(math.inf)
        self.exp._settle_drop(job, "internal_error")

    def _watch_held(self) -> None:
        """Have the timer look at this lane within :data:`STUCK` from now, in case the worker that
        began holding results hangs in its next job (while results are held, each look
        schedules the next: see :meth:`check`)."""
        if time.perf_counter() + STUCK < timer.wake_at:
            timer.poke()

    def release_held(self) -> None:
        """Pass the results the lane's workers hold (see :meth:`_run_one`) to the emitter
        thread: for a worker that may hang, and for close() (which never compares on the
        caller's thread)."""
        with self.exp._lock:
            held, self.held = self.held, []
        for job, obs in held:
            emitter.put(job, obs)

    def _retire_locked(self) -> bool:
        """Take this idle worker off the lane when its candidates are fast, nothing waits
        and another worker stays; True if it left."""
        return (
            not self.slow and not self.queue.qsize() and self.threads() > 1 and self._leave_locked()
        )

    def _waiting_behind(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and the jobs queued behind it, up to :meth:`batch_limit`; True if a stop
        marker came (the jobs taken run first)."""
        taken = [first]
        limit = self.batch_limit()
        while len(taken) < limit:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return taken, True
            taken.append(self.job_of(item))
        return taken, False

    def batch_limit(self) -> int:
        """How many jobs one message to a worker process may carry: :data:`BATCH`, or fewer
        so that a batch of runs as long as the longest lately takes at most half the timeout;
        one until a run was measured."""
        timeout = self.exp.timeout
        if timeout is None:
            return BATCH
        if not self.run_s:
            return 1
        return max(1, min(BATCH, int(timeout / 2 / self.run_s)))

    def _record_run_locked(self, duration: float) -> None:
        """:meth:`_record_locked` for a batch's run, and the run length :meth:`batch_limit`
        goes by: up at once with a long run, down slowly."""
        self._record_locked(duration)
        if duration != math.inf:
            self.run_s = max(duration, self.run_s + (duration - self.run_s) * _ALPHA)

    def _record_locked(self, duration: float) -> None:
        """Fold one candidate run into the share of slow runs, which says whether the lane's
        candidates are slow."""
        # A share rather than a mean: a fast run that lost the GIL to other threads midway
        # takes as long as a slow one, and that happens to a few runs in a busy process.
        slow = 1.0 if duration >= SLOW_JOB else 0.0
        self.slow_share += (slow - self.slow_share) * _ALPHA
        # Hysteresis: a lane near the threshold does not start and retire threads by turns.
        self.slow = self.slow_share >= (0.25 if self.slow else 0.5)

    def check(self, now: float) -> float:
        """The timer's look at this lane: settle the running jobs past their deadline, start
        a worker if the queue waits behind a stuck one; when to look again."""
        exp = self.exp
        timeout = exp.timeout
        expired: list[Job] = []
        next_at = math.inf
        start = False
        with exp._lock:
            if self.starts != self.starts_seen and timeout is not None:
                # Jobs ran since the last look: look again one timeout from now, so a job
                # that starts meanwhile is due no sooner and need not poke (one wake-up per
                # timeout under load, rather than one per job when jobs are few and short).
                self.starts_seen = self.starts
                next_at = now + timeout
            youngest = -math.inf  # the latest start among the running jobs
            for job in self.running:
                youngest = max(youngest, job.started)
                if timeout is not None and job.state == OPEN:
                    deadline = job.started + timeout
                    if deadline <= now:
                        expired.append(job)
                    else:
                        next_at = min(next_at, deadline)
            if self.watched:
                start, look = self._watch_locked(now, youngest)
                next_at = min(next_at, look)
            release = False
            if self.held:
                release = not self.running or now - youngest >= STUCK  # its worker may hang
                if not release:
                    next_at = min(next_at, youngest + STUCK)
        for job in expired:
            exp._settle_timeout(job, timeout)
        if release:
            self.release_held()
        if start:
            self._start_worker()
        return next_at

    def _watch_locked(self, now: float, youngest: float) -> tuple[bool, float]:
        """:meth:`check`'s look at a queue that waited: whether to start a worker (reserved
        here), and when to look again."""
        limit = self.exp._max_concurrency
        if not self._backlog(limit):
            self.watched = False
            # A caller that saw the flag still set did not poke: look at the queue once more
            # now that it is cleared (the caller put before it looked).
            self.watched = self._backlog(limit)
            return False, now + STUCK if self.watched else math.inf
        if not self.running:  # every worker is idle: they take the queue
            return False, now + STUCK
        if self.pooled:
            since = min(self.settling.values(), default=math.inf)
            if now - since >= STUCK:  # stuck out of the pool: one more takes its slot
                self._reserve_worker_locked()
                return True, now + STUCK
            if not self._backlog():
                # At max_threads a batch that runs long in the pool is no hung worker: watch
                # only a worker out of it (a put watches again when one is).
                self.watched = since < math.inf
                return False, since + STUCK
        if not self.slow and now - youngest < STUCK:
            return False, youngest + STUCK
        # Slow (below the bound), or every running worker is stuck: one more; does the
        # queue still wait a STUCK from now?
        self._reserve_worker_locked()
        return True, now + STUCK

    def _backlog(self, limit: int | None = None) -> bool:
        """Jobs wait that no idle worker will take, and the lane has fewer than ``limit``
        threads (:attr:`max_threads`).  Callers read it without the lock (single reads, a
        moment's view); the timer and _grow under it."""
        return self.queue.qsize() > self.idle and self.threads() < (limit or self.max_threads)

    def stop_threads(self) -> list[threading.Thread]:
        """Ask every worker to end (busy ones after their job); returns them, to join."""
        with self.exp._lock:
            workers = list(self.workers)
        for _ in workers:
            self.queue.put(None)
            self.parked.wake()
        return workers

    def forget_task(self, task: asyncio.Task[None]) -> None:
        job = self.tasks.pop(task, None)
        if job is not None and task.cancelled() and job.state == OPEN:
            # Cancelled before its first step (a loop cancelling every task as it shuts
            # down): _task_main never ran to count it or to give its queue place back.
            with self.exp._lock:
                if job.state == OPEN and not job.started:
                    self.left += 1
            self.exp._settle_drop(job, "loop_closed")

    def settle_orphans(self) -> None:
        """Count as ``loop_closed`` the async candidates whose loop was closed under them
        (``loop.close()`` with tasks pending: nothing cancels them, nothing will run them),
        giving back the queue place of those that never left the queue.  Their tasks are
        let go (collected, they run no clean-up on the closed loop: see _task_main)."""
        exp = self.exp
        for task, job in list(self.tasks.items()):
            if task.done() or not task.get_loop().is_closed():
                continue
            self.tasks.pop(task, None)
            with exp._lock:
                if job.state != OPEN:
                    continue
                if not job.started:  # still waiting for a concurrency slot
                    self.left += 1
            exp._settle_drop(job, "loop_closed")

    def drain(self) -> list[Job]:
        """Every job not yet settled: queued, running, and async tasks'."""
        with self.exp._lock:
            jobs = self._take_queued_locked()
            jobs.extend(self.running)
        jobs.extend(self.tasks.values())
        return jobs

    def reset_after_fork(self) -> None:
        self.queue = queue.SimpleQueue()
        self.parked = Parked()  # the parent's threads: none of them waits here
        self.admitted = self.left = self.idle = self.spawning = 0
        self.workers = set()
        self.running = set()
        self.watched = False
        self.tasks = {}
        self.semaphores = weakref.WeakKeyDictionary()
        self.held = []  # the parent's: counted as in flight, so as fork
        self.settling = {}


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
        await semaphore.acquire()
        try:
            with exp._lock:
                lane.left += 1
                waiting = False
                job.started = time.perf_counter()  # out of the queue (see settle_orphans)
                if job.state != OPEN:
                    return
            job.queue_s = seconds_since(job.t1)
            await _run_task(job)
        finally:
            # Not when the loop was closed under the task (it is being collected,
            # settled by Lane.settle_orphans): a release would schedule on the dead loop.
            if not loop.is_closed():
                semaphore.release()
    except asyncio.CancelledError:
        if waiting:  # cancelled in the queue: give its place back
            with exp._lock:
                lane.left += 1
        # Not our own cancellation (that one is caught in _run_task): the loop is closing
        # under us, e.g. asyncio.run() cancelling what is left.  Count it, then let it go.
        exp._settle_drop(job, "loop_closed")
        raise


async def _run_task(job: Job) -> None:
    span = candidate_span(job)
    if span is None:
        obs = await _await_candidate(job)
    else:
        with span as current:
            obs = await _await_candidate(job)
            current.set_attribute("shadowdeco.candidate.status", obs.status if obs else "timeout")
    if obs is not None:
        job.exp._deliver(job, obs)


#: How often a running async candidate's task looks at the experiment's ``timeout`` again
#: (it may be changed while candidates run: they get the new deadline).
_RECHECK: Final = 0.5


async def _await_candidate(job: Job) -> Observation | None:
    """The candidate's observation, or None when it timed out (already settled)."""
    _IN_SHADOW.set(True)
    start = time.perf_counter_ns()
    try:
        fn, args, kwargs = prepare_call(job)
        coro = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the candidate failed before it awaited
        return raised(exc, start)
    inner = asyncio.ensure_future(contained(coro))
    try:
        while True:
            timeout = job.exp._timeout  # read again: a new one applies to this run too
            left = math.inf if timeout is None else timeout - seconds_since(start)
            done, _ = await asyncio.wait({inner}, timeout=max(0.0, min(left, _RECHECK)))
            if done or left <= _RECHECK:
                break
    except asyncio.CancelledError:
        # The loop is going away (asyncio.run cancels what is left): the candidate may not
        # even have started; close it so it does not warn "never awaited".
        inner.cancel()
        if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()
        raise
    if not done:
        job.exp._settle_timeout(job, seconds_since(start))
        # The task still holds its slot (the semaphore) until it really ends (DESIGN I8).
        inner.cancel()
        await asyncio.wait({inner})
        return None
    duration = seconds_since(start)
    if inner.cancelled():
        return observation_of("error", None, ("CancelledError", ""), duration)
    status, payload = inner.result()
    return observation((status, payload, duration))


# --------------------------------------------------------------------------------------------
# The timer: settles jobs as "timeout" at their deadline


class _Timer:
    """Settles running jobs as ``timeout`` at their deadline, and starts a worker for a lane
    whose queue waits behind a stuck one (see :class:`Lane`).

    Nothing is scheduled per job: the timer looks at the running jobs of the lanes it knows (a
    few per lane) and sleeps until the earliest deadline.  A job that starts later under the
    same timeout is due later, so a worker pokes the timer only when its job is due before
    :attr:`wake_at`: when the timer was idle, or the timeout was shortened.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._lanes: weakref.WeakSet[Lane] = weakref.WeakSet()
        #: When the timer looks next (perf_counter time); read by workers without the lock.
        self.wake_at = math.inf
        self._poked = False
        self._thread: threading.Thread | None = None

    def add(self, lane: Lane) -> None:
        with self._cond:
            self._lanes.add(lane)

    def poke(self) -> None:
        """Have the timer look again now (its thread starts on the first poke)."""
        with self._cond:
            self._poked = True
            if self._thread is None:
                self._thread = start_daemon(self._run, "shadowdeco-timer")
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                # A worker starting a job from here on pokes (due before infinity), so a job
                # the look below misses is looked at once more.
                self.wake_at = math.inf
                self._poked = False
                lanes = list(self._lanes)
            now = time.perf_counter()
            next_at = min((lane.check(now) for lane in lanes), default=math.inf)
            del lanes
            with self._cond:
                if self._poked:
                    continue
                self.wake_at = next_at
                if next_at == math.inf:
                    self._cond.wait()
                else:
                    self._cond.wait(max(0.0, next_at - time.perf_counter()))

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


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
            emit(job, obs)
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
    except BaseException:  # noqa: BLE001 - a bug of ours: logged, counted
        emit_failed(job.exp, [job])


def emit_many(exp: Experiment, items: list[tuple[Job, Observation]]) -> None:
    """:func:`emit` for many results of one experiment at once (a lane worker's hand-over)."""
    try:
        exp._emit_many(items)
    except BaseException:  # noqa: BLE001 - a bug of ours: logged, counted
        emit_failed(exp, [job for job, _ in items])


def emit_failed(exp: Experiment, jobs: list[Job]) -> None:
    """Emitting ``jobs`` raised (a bug in shadowdeco): log it, and count those it did not
    settle as ``internal_error``.  Called in the ``except`` block."""
    log.exception("shadowdeco: emitting a result of %s failed", exp.name)
    for job in jobs:
        if job.state != DONE:
            exp._drop_handed(job, "internal_error")


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
