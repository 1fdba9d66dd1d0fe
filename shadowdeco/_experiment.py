"""Experiment: settings, runtime control, exact accounting, the registry and the config file.

>>> import shadowdeco
>>> @shadowdeco.shadow(candidate=abs, name="doc-abs", sinks=[])
... def absolute(x):
...     return abs(x)
>>> absolute.shadow.sample = 0.5          # runtime control while serving
>>> shadowdeco.experiment("doc-abs") is absolute.shadow
True
>>> absolute.shadow.close()

Accounting (DESIGN I4): every sampled call ends exactly once, as an emitted result or as a
drop with a reason, so ``sampled == emitted + sum(dropped.values()) + in_flight`` at every
read of :meth:`Experiment.stats`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import copy
import dataclasses
import datetime as _dt
import decimal
import enum
import fractions
import functools
import itertools
import json
import logging
import math
import multiprocessing.util
import numbers
import operator
import os
import random
import threading
import time
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from types import MappingProxyType
from typing import Any, Final

from . import _delivery, _result
from . import compare as _compare
from . import sampling as _sampling
from ._delivery import sink_attribute, stop_worker, stop_workers, wait_retired, worker_for
from ._result import Observation, ShadowResult, error_of, observation_of, result_of, to_jsonable
from ._runner import (
    DONE,
    FAILED,
    HANDED,
    OPEN,
    Args,
    Job,
    Lane,
    Waited,
    emit,
    emit_failed,
    emitter,
    guard,
    log_failure,
    start_task,
    stop_background_loop,
    timer,
)
from .sinks import Logging, as_emit

__all__ = [
    "Args",
    "Experiment",
    "Stats",
    "configure",
    "experiment",
    "experiments",
    "flush",
    "shutdown",
]

log = logging.getLogger("shadowdeco")

_NOTHING: Final = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A consistent snapshot of one experiment's counters."""

    sampled: int
    skipped: int
    emitted: int
    dropped: Mapping[str, int]
    in_flight: int
    matched: int
    mismatched: int
    candidate_errors: int
    timeouts: int
    sink_errors: int
    #: results a sink fell too far behind to receive, by sink name (not counted as drops:
    #: the result was emitted, this sink missed it)
    sink_drops: Mapping[str, int]
    compare_errors: int
    sampler_errors: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


# --------------------------------------------------------------------------------------------
# Inputs (DESIGN I5)

# Values of these types cannot change under the candidate, so they are passed, not copied.
_IMMUTABLE: Final = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        range,
        decimal.Decimal,
        fractions.Fraction,
        _dt.datetime,
        _dt.date,
        _dt.time,
        _dt.timedelta,
        uuid.UUID,
    }
)


def _immutable(value: object) -> bool:
    cls = type(value)
    if cls in _IMMUTABLE:
        return True
    if cls is tuple or cls is frozenset:
        return all(_immutable(v) for v in value)  # type: ignore[attr-defined]
    return isinstance(value, enum.Enum)


def _snapshot(
    copier: Callable[[Any], Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The candidate's copy of the inputs; immutable arguments are shared, not copied."""
    if copier is None:
        return args, kwargs
    for arg in args:
        if type(arg) not in _IMMUTABLE:
            break
    else:
        if not kwargs:  # the common case: a few numbers or strings
            return args, kwargs
    new_args = tuple(_copy(copier, a) for a in args)
    new_kwargs = {k: _copy(copier, v) for k, v in kwargs.items()}
    return new_args, new_kwargs


def _copy(copier: Callable[[Any], Any], value: Any) -> Any:
    if _immutable(value):
        return value
    if copier is copy.deepcopy:
        # A flat dict or list of immutable values (a feature dict, a row) needs only a
        # shallow copy to be safe: many times cheaper than deepcopy's walk.
        cls = type(value)
        if cls is dict and all(type(v) in _IMMUTABLE for v in value.values()):
            if all(type(k) in _IMMUTABLE for k in value):
                return dict(value)
        elif cls is list and all(type(v) in _IMMUTABLE for v in value):
            return list(value)
    return copier(value)


#: What ``record_inputs`` keeps of a call: ``recorder(experiment, args, kwargs)``.
_Recorder = Callable[["Experiment", tuple[Any, ...], dict[str, Any]], dict[str, Any]]


def _recorded_inputs(
    exp: Experiment, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What ``record_inputs`` keeps of a call: a private deep copy of each argument, so that
    every serializer meets the original objects once, when the result is written (as it meets
    the values), and the candidate's changes to its arguments do not show.  Off the live path
    (in :meth:`Experiment._before_run`); immutable values are kept, not copied.
    """
    return {
        "args": [_recorded(exp, value) for value in args],
        "kwargs": {name: _recorded(exp, value) for name, value in kwargs.items()},
    }


def _recorded(exp: Experiment, value: Any) -> Any:
    """One argument for the record: a deep copy or, if it will not copy, its conversion by
    :func:`to_jsonable` now (the serializer then meets that form); never raises."""
    try:
        return _copy(copy.deepcopy, value)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise  # a Ctrl-C on the main thread (an async candidate's task) is the user's
    except BaseException:  # noqa: BLE001, S110 - any failure to copy: converted below
        pass
    name = _result.type_name(value)
    exp._warn_once(
        f"record_inputs: an argument of type {name} could not be deep-copied; it is recorded "
        "converted by shadowdeco.to_jsonable, and a serializer meets it in that form"
    )
    try:
        return to_jsonable(value)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise
        kind, message = "KeyboardInterrupt", ""
    except BaseException as exc:  # noqa: BLE001 - a conversion bug must not lose the result
        kind, message = error_of(exc)
    return {"$type": name, "$error": f"{kind}: {message}"}


# --------------------------------------------------------------------------------------------
# Validation: every bad option fails at decoration, naming the parameter and the value


def _check_positive_int(param: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise (TypeError if not isinstance(value, int) else ValueError)(
            f"{param} must be a positive int, got {value!r}"
        )
    return value


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a positive number of seconds or None, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {value!r}")
    return float(value)


def _check_wait(value: object) -> float | None:
    """A ``timeout`` to wait for: seconds (a negative number is 0) or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"timeout must be a number of seconds or None, got {value!r}")
    return None if value == math.inf else max(0.0, float(value))


def _check_optional_callable(param: str, value: object) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{param} must be a callable or None, got {value!r}")
    return value


def _check_candidate(value: object) -> Any:
    if isinstance(value, str):
        if not value.isidentifier():
            raise ValueError(f"candidate must be a callable or a method name, got {value!r}")
        return value
    if not callable(value):
        raise TypeError(f"candidate must be a callable or a method name, got {value!r}")
    return value


def _check_async_in_executor(candidate: object, executor: Executor | None) -> None:
    if executor is not None and _is_async_callable(candidate):
        raise TypeError(
            f"an async candidate runs on an event loop, not in an executor: got "
            f"candidate={candidate!r} with executor={executor!r}"
        )


def _check_copier(value: object) -> Callable[[Any], Any] | None:
    if value is True:
        return copy.deepcopy
    if value is False or value is None:
        return None
    if callable(value):
        return value
    raise TypeError(f"copy_inputs must be True, False or a callable, got {value!r}")


class _Held:
    """A value compared by ``==`` but held weakly where it can be (a function, a bound
    method, an object): what an experiment remembers of its candidate as decorated must not
    keep a model swapped out while serving in memory; once that is gone, nothing equals it.
    A small value compared by value (a method name; a class that says ``compared_by_value``,
    as the middleware's URL candidate) is held as it is: an equal one made later matches."""

    __slots__ = ("_ref",)

    def __init__(self, value: object) -> None:
        ref: Callable[[], object] = functools.partial(_itself, value)
        if isinstance(value, types.MethodType):
            ref = weakref.WeakMethod(value)
        elif not getattr(type(value), "compared_by_value", False):
            with contextlib.suppress(TypeError):  # a str, a builtin: not weakly referable
                ref = weakref.ref(value)
        self._ref = ref

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Held):
            return NotImplemented
        mine, theirs = self._ref(), other._ref()
        return mine is not None and theirs is not None and bool(mine == theirs)

    __hash__ = None  # type: ignore[assignment]


def _itself(value: object) -> object:
    return value


def _is_async_callable(fn: object) -> bool:
    return asyncio.iscoroutinefunction(fn) or asyncio.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ on an instance
    )


# --------------------------------------------------------------------------------------------
# The experiment


#: What user code on the live path (a sampler, an input copier) may raise into the caller: a
#: Ctrl-C, and the cancellation of the caller's own task, are the caller's, not the shadow's.
_CALLERS: Final = (KeyboardInterrupt, asyncio.CancelledError)


def _cancel(job: Job) -> None:
    """Stop what still runs a job that is settled without it (a timeout, a close): cancel a
    future or task, kill a ProcessPool worker.  A thread cannot be stopped: no ``cancel``."""
    cancel = job.cancel
    if cancel is not None:
        try:
            cancel()
        except Exception:
            log.debug("shadowdeco: could not cancel a candidate", exc_info=True)


class _InlineWait:
    """What an inline call (shadowdeco.testing) waits for: its own job settled, then its
    result handed to every sink it was offered to.  Nothing else: not the other calls'
    shadows, which may be slow or hung.

    Counts what is still to come: the settling (one), and one per sink the result is being
    offered to; each is counted before it can happen, so the count reaches 0 only once.
    """

    __slots__ = ("_cond", "_open", "sinks")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._open = 1  # the settling
        self.sinks: list[Any] = []  # the sinks that took the result (flushed after)

    def offer(self, exp: Experiment, result: Any, sinks: Iterable[Any]) -> list[str]:
        """Offer ``result`` to each sink's worker, which reports its delivery; the names of
        those too far behind to take it."""
        dropped = []
        for sink in sinks:
            worker = worker_for(sink)
            with self._cond:
                self._open += 1
            if worker.offer(exp, result, self.done):
                self.sinks.append(sink)
            else:
                dropped.append(worker.name)
                self.done()
        return dropped

    def done(self) -> None:
        """One thing waited for happened (the job settled, or one sink got the result)."""
        with self._cond:
            self._open -= 1
            if self._open == 0:
                self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._open == 0, timeout)


class Experiment:
    """One live function and its candidate: settings, runtime control and counters.

    ``enabled``, ``sample`` and ``candidate`` may be changed while calls are in flight; calls
    already sampled finish with the candidate they started with.
    """

    def __init__(
        self,
        name: str,
        candidate: Any,
        *,
        sample: Any = 1.0,
        sinks: Iterable[Any] | None = None,
        compare: Any = None,
        timeout: float | None = 10.0,
        max_concurrency: int = 4,
        max_queue: int = 1000,
        copy_inputs: Any = True,
        adapt: Callable[..., Any] | None = None,
        key: Callable[..., Any] | None = None,
        record_inputs: bool = False,
        context: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        enabled: bool = True,
        executor: Executor | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self._name = name
        #: checks (and, for the middleware, wraps) a candidate given here or set later
        self._make_candidate: Callable[[Any], Any] = _check_candidate
        self._candidate = _check_candidate(candidate)
        self._sample_value = sample
        self._sampler = _sampling.coerce(sample, param="sample")
        self._rate = _rate_of(self._sampler)
        self._code_sampler = self._sampler  # as the code set it: what a config rate steers
        if sinks is not None and (isinstance(sinks, (str, bytes)) or not _iterable(sinks)):
            raise TypeError(f"sinks must be a list of sinks or None, got {sinks!r}")
        self._sinks = None if sinks is None else tuple(sinks)
        for sink in self._sinks or ():
            as_emit(sink)  # fails here, at decoration, for what is not a sink
        self._compare_value = compare
        self._comparator = _compare.coerce(compare, param="compare")
        self._timeout = _check_timeout(timeout)
        self._max_concurrency = _check_positive_int("max_concurrency", max_concurrency)
        self._max_queue = _check_positive_int("max_queue", max_queue)
        self._copy_value = copy_inputs
        self._copier = _check_copier(copy_inputs)
        self._adapt = _check_optional_callable("adapt", adapt)
        self._key = _check_optional_callable("key", key)
        if not isinstance(record_inputs, bool):
            raise TypeError(f"record_inputs must be a bool, got {record_inputs!r}")
        self._record_inputs = record_inputs
        #: what record_inputs keeps of a call's ``(exp, args, kwargs)``; the middleware keeps
        #: its request summary instead (the request itself holds credentials)
        self._record_of: _Recorder = _recorded_inputs
        if context is not None and not (callable(context) or isinstance(context, Mapping)):
            raise TypeError(f"context must be a mapping, a callable or None, got {context!r}")
        self._context = context
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        self._enabled = enabled
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        _check_async_in_executor(candidate, executor)
        self._executor = executor

        self._lock = threading.Lock()  # counters and state of the background (see Lane)
        self._refresh_lock = threading.Lock()  # _active's inputs, read and written together
        self._live_lock = threading.Lock()  # the live path's own: sampled, the queue bound
        self._settled = Waited(self._lock)
        self._lane = Lane(self)
        self._closed = False
        self._sinks_closed = False  # close() let go of its sinks: a late result is dropped
        self._started = False  # the emitter and sink threads, see _start_threads
        self._warned: set[str] = set()
        #: the jobs of inline calls (shadowdeco.testing) and what each call waits on; read
        #: (is it empty?) where a job is settled, off the live path
        self._inline_jobs: dict[Job, _InlineWait] = {}
        self._generation = 0  # bumped in a forked child: older jobs are the parent's
        self._reset_counters()
        self._refresh()  # sets _active, the flag the live path reads first
        # What a second decoration under this name must agree with: the settings as given,
        # not as changed since while serving (a config file's sample, a swapped candidate).
        self._as_decorated = self._settings()

    def _reset_counters(self) -> None:
        self._sampled = 0  # under the live lock, as is the lane's admitted count
        self._queue_full = 0  # under the live lock
        self._skipped = itertools.count()  # next() is atomic under the GIL: no lock on skip
        self._emitted = 0
        self._dropped: dict[str, int] = {}
        self._matched = 0
        self._mismatched = 0
        self._candidate_errors = 0
        self._timeouts = 0
        self._sink_errors = 0
        self._sink_drops: dict[str, int] = {}
        self._compare_errors = 0
        self._sampler_errors = 0

    # -- settings that identify the experiment (a second decoration must agree) -------------

    def _settings(self) -> tuple[Any, ...]:
        return (
            _Held(self._candidate),  # not kept alive by this: a model swapped out is freed
            self._sample_value,
            self._sinks,
            self._compare_value,
            self.timeout,
            self._max_concurrency,
            self.max_queue,
            self._copy_value,
            self._adapt,
            self._key,
            self.record_inputs,
            self._context,
            self._executor,
        )

    # -- runtime control ---------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"enabled must be a bool, got {value!r}")
        self._enabled = value
        self._refresh()

    @property
    def sample(self) -> Any:
        """The sampling rate or sampler; set a float in [0, 1] or a sampler."""
        return self._sample_value

    @sample.setter
    def sample(self, value: Any) -> None:
        self._code_sampler = self._set_sample(value)

    def _set_sample(self, value: Any) -> _sampling.Sampler:
        sampler = _sampling.coerce(value, param="sample")
        # One tuple store, so a concurrent call sees the old pair or the new one, not a mix.
        self._sampler, self._rate, self._sample_value = sampler, _rate_of(sampler), value
        return sampler

    def _steer_rate(self, p: float) -> None:
        """The config file's ``sample``, applied to the sampler the code set: it replaces a
        plain rate; it changes a ``by_key`` sampler's rate and keeps its key (the per-key
        decision stays stable), in a composition too (``rate(0.1) & per_second(50)``: the
        rate changes, the cap stays); in front of a sampler without a rate it is a rate that
        the code's predicates and caps still follow (a route kept out stays out)."""
        code = self._code_sampler
        if _rate_of(code) is not None or p == 0.0:  # (0: none at all, decided inline)
            self._set_sample(p)
            return
        steered = _with_rate(code, p)
        if steered is None:  # no rate in it: one in front
            steered = code if p == 1.0 else _sampling.rate(p, param="sample") & code
        self._set_sample(steered)

    @property
    def candidate(self) -> Any:
        return self._candidate

    @candidate.setter
    def candidate(self, value: Any) -> None:
        _check_async_in_executor(value, self._executor)
        self._candidate = self._make_candidate(value)

    @property
    def timeout(self) -> float | None:
        """Seconds a candidate may run before its result is a timeout (None: no limit)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = _check_timeout(value)
        if self._lane.running:  # a shorter timeout may be due before the timer's next look
            timer.poke()

    # Fixed at decoration (read-only): the name is the registry's key, the bounds and choices
    # are what a second decoration under the name is checked against.

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @property
    def record_inputs(self) -> bool:
        return self._record_inputs

    @property
    def closed(self) -> bool:
        return self._closed

    def _refresh(self) -> None:
        # Read and written in one go: a refresh from another thread (a config reload) that
        # read the old ``_enabled`` must not write its answer after this one.
        with self._refresh_lock:
            self._active = self._enabled and not self._closed and not _state.killed()

    # -- the live path: short and guarded ------------------------------------------------------

    def _drop_sampled(self, reason: str) -> None:
        """A sampled call that cannot be shadowed at all (e.g. body_too_large): count it."""
        with self._live_lock:
            self._sampled += 1
        with self._lock:
            self._drop_locked(reason)

    def _sampled_by_sampler(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Ask a sampler that is not a plain rate (the wrapper decides rates inline)."""
        try:
            take = bool(self._sampler(*args, **kwargs))
        except _CALLERS:
            raise
        except BaseException:  # noqa: BLE001 - a sampler bug must not reach the caller
            # On the live path, possibly on every call: logged at most once a minute.
            log_failure("sampler (call not sampled)", self.name)
            with self._lock:
                self._sampler_errors += 1
            take = False
        if not take:
            next(self._skipped)
        return take

    def _admit(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Job | None:
        """Count a sampled call, reserve its place and snapshot its inputs (live path).

        None when it is not shadowed after all: the queue is full or the inputs would not
        copy (counted as a drop either way).  (The sync wrapper inlines it: see
        ``shadowdeco._decorator``.)
        """
        lane = self._lane
        with self._live_lock:  # never held by a background thread: no waiting on one here
            self._sampled += 1
            if lane.waiting >= self._max_queue:
                self._queue_full += 1
                return None
            lane.admitted += 1
        snapshot = self._snapshot_inputs(args, kwargs)
        if snapshot is None:
            return None
        ctx = contextvars.copy_context()
        job = Job(self, self._candidate, self._generation, instance, *snapshot, ctx)
        job.t0 = time.perf_counter_ns()
        return job

    def _snapshot_inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The candidate's copy of an admitted call's inputs; None when they would not copy
        (its place given back, counted as a drop)."""
        try:
            return _snapshot(self._copier, args, kwargs)
        except BaseException as exc:  # an uncopyable argument: count it, serve live
            callers = isinstance(exc, _CALLERS)  # a Ctrl-C, a cancellation: settled, passed on
            if not callers:
                log_failure("copying the inputs (call not shadowed)", self.name)
            with self._lock:
                self._lane.left += 1
                self._drop_locked("copy_failed")
            if callers:
                raise
            return None

    def _submit(
        self,
        job: Job,
        value: Any,
        error: BaseException | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> _InlineWait | None:
        """Hand a job whose live call ended to the runner (live path: enqueue only).

        The live observation is built later, off the live path; an error is reduced to its
        (type, message) now, so the traceback and its frames are not kept alive.

        In inline mode (shadowdeco.testing) a sync call (no ``loop``) waits here for its own
        shadow; for an async one, what to await is returned (see :meth:`_await_inline`).
        """
        job.t1 = time.perf_counter_ns()
        if job.gen != self._generation:
            return None  # begun before a fork, in the parent: counted as "fork" already
        job.live_value = value
        if error is not None:
            job.live_error = error_of(error)
        if _state.inline:  # testing; the one read of it here, as cheap as before when off
            return self._submit_inline(job, loop)
        self._hand_over(job, loop)
        return None

    def _hand_over(self, job: Job, loop: asyncio.AbstractEventLoop | None) -> None:
        """Settle ``job`` as ``shutdown`` if closed; else start its task or queue it."""
        if self._closed:
            with self._lock:
                self._lane.left += 1
            self._settle_drop(job, "shutdown")
        elif loop is not None and self._executor is None and self._async_candidate(job):
            start_task(job, loop)
        else:
            if not self._started:
                self._start_threads()
            self._lane.put(job)

    def _submit_inline(
        self, job: Job, loop: asyncio.AbstractEventLoop | None
    ) -> _InlineWait | None:
        """:meth:`_submit` in inline mode: the wait is registered before the job can be
        settled; a sync call (no ``loop``) waits here, an async one gets what to await."""
        waiter = self._inline_jobs[job] = _InlineWait()
        self._hand_over(job, loop)
        if loop is None:
            self._wait_inline(waiter)
            return None
        return waiter

    def _start_threads(self) -> None:
        """Start the emitter and the sinks' threads with the first shadow, not the first
        result: Python 3.12+ refuses new threads at interpreter exit, when the pending
        results are flushed."""
        self._started = True
        emitter.ensure_started()
        for sink in self._sinks_now():
            worker_for(sink).ensure_started()

    def _abandon(self, job: Job, reason: str) -> None:
        """An admitted call whose live part never completed (a client gone mid-response):
        not shadowed, counted as a drop with ``reason``."""
        if job.gen != self._generation:  # admitted before a fork: counted as fork already
            return
        with self._lock:
            self._lane.left += 1
        self._settle_drop(job, reason)

    def _inline_timeout(self) -> float:
        """How long an inline call waits for its shadow (testing): past the timeout, a bit."""
        return (self.timeout or 0.0) + 10.0

    def _wait_inline(self, waiter: _InlineWait) -> None:
        """Wait until this call's own job is settled and its result handed to each of its
        sinks, then flush those sinks (a JSONL line is in the file): what other calls still
        have in flight is not waited for."""
        timeout = self._inline_timeout()
        deadline = time.monotonic() + timeout
        if waiter.wait(timeout):
            self._flush_sinks(waiter.sinks, max(0.0, deadline - time.monotonic()))

    async def _await_inline(self, waiter: _InlineWait) -> None:
        """:meth:`_wait_inline` for an async call: waits in a thread, so the loop keeps
        running (the candidate may be a task on it)."""
        await asyncio.get_running_loop().run_in_executor(None, self._wait_inline, waiter)

    def _release_inline(self, job: Job) -> None:
        """``job`` is settled: the inline call waiting for it (if any) may go on once its
        result reached the sinks it was offered to."""
        waiter = self._inline_jobs.pop(job, None)
        if waiter is not None:
            waiter.done()

    def _async_candidate(self, job: Job) -> bool:
        candidate = job.candidate
        if isinstance(candidate, str):
            candidate = getattr(job.instance, candidate, None)
        return _is_async_callable(candidate)

    # -- settling a job: exactly once ----------------------------------------------------------

    def _claim(self, job: Job, state: int) -> bool:
        with self._lock:
            if job.state != OPEN:
                return False
            job.state = state
            return True

    def _claim_result(self, job: Job) -> bool:
        """Claim ``job``, whose candidate ended, for its result; False (logged) when a
        timeout or close settled it already."""
        if self._claim(job, HANDED):
            return True
        log.debug("shadowdeco: %s candidate ended after it was settled", self.name)
        return False

    def _deliver(self, job: Job, obs: Observation, *, here: bool = False) -> None:
        """The candidate ended: pass it on (``here``: build the result on this thread),
        unless a timeout or close settled it already."""
        if self._claim_result(job):
            if here:
                emit(job, obs)
            else:
                emitter.put(job, obs)

    def _settle_timeout(self, job: Job, duration: float | None) -> None:
        if not self._claim(job, HANDED):
            return
        _cancel(job)
        message = f"candidate did not finish within {self.timeout} s"
        emitter.put(job, Observation("timeout", None, ("TimeoutError", message), duration))

    def _settle_drop(self, job: Job, reason: str) -> bool:
        """Count ``job`` as dropped for ``reason``, unless it was settled already (False)."""
        with self._lock:
            if job.state != OPEN:
                return False
            job.state = DONE
            self._drop_locked(reason)
        if self._inline_jobs:
            self._release_inline(job)
        return True

    def _drop_handed(self, job: Job, reason: str) -> None:
        with self._lock:
            job.state = DONE
            self._drop_locked(reason)
        if self._inline_jobs:
            self._release_inline(job)

    def _drop_locked(self, reason: str) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        self._notify_if_settled_locked()

    # -- the emitter thread: compare, build, sink ---------------------------------------------

    def _emit(self, job: Job, obs: Observation) -> None:
        result, match, compare_failed = self._build(job, obs)
        if self._sinks_closed:  # built after close() let go of its sinks: not written
            self._drop_handed(job, "shutdown")
            return
        waiter = self._inline_jobs.get(job) if self._inline_jobs else None
        if waiter is None:
            dropped_at = [
                worker.name
                for worker in map(worker_for, self._sinks_now())
                if not worker.offer(self, result)
            ]
        else:  # an inline call waits for this result to reach its sinks
            dropped_at = waiter.offer(self, result, self._sinks_now())
        with self._lock:
            self._count_emitted_locked(job, obs, match, compare_failed)
            for name in dropped_at:
                self._sink_drops[name] = self._sink_drops.get(name, 0) + 1
            self._notify_if_settled_locked()
        if waiter is not None:
            self._release_inline(job)

    def _emit_many(self, items: list[tuple[Job, Observation]]) -> None:
        """:meth:`_emit` for the results a lane worker hands over together: each is built
        on its own (one that fails is dropped alone, as ``internal_error``), then they are
        offered to each sink in one go and counted under one lock."""
        if len(items) == 1 or self._inline_jobs:  # an inline call waits for its own
            for job, obs in items:
                emit(job, obs)
            return
        built = []
        for job, obs in items:
            try:
                built.append((job, obs, *self._build(job, obs)))
            except BaseException:  # noqa: BLE001 - a bug of ours: logged, counted
                emit_failed(self, [job])
        if self._sinks_closed:
            for job, *_ in built:
                self._drop_handed(job, "shutdown")
            return
        results = [result for _, _, result, _, _ in built]
        dropped = [
            (worker.name, worker.offer_many(self, results))
            for worker in map(worker_for, self._sinks_now())
        ]
        with self._lock:
            for job, obs, _, match, compare_failed in built:
                self._count_emitted_locked(job, obs, match, compare_failed)
            for name, lost in dropped:
                if lost:
                    self._sink_drops[name] = self._sink_drops.get(name, 0) + lost
            self._notify_if_settled_locked()

    def _build(self, job: Job, obs: Observation) -> tuple[ShadowResult, bool | None, bool]:
        """Compare the arms and build the paired result: (result, match, compare failed)."""
        duration = (job.t1 - job.t0) / 1e9  # whole nanoseconds: see seconds_since()
        if job.live_error is None:
            live = observation_of("ok", job.live_value, None, duration)
        else:
            live = observation_of("error", None, job.live_error, duration)
        match, score = None, None
        compare_failed = False
        if obs.status != "timeout":
            outcome = guard("comparator", self.name, self._compare_arms, live, obs)
            compare_failed = outcome is FAILED
            if not compare_failed:
                match, score = outcome
        trace_id, span_id, trace_sampled = job.trace or (None, None, None)
        # Positional, in the field order of ShadowResult (a result per sampled call).
        result = result_of(
            self.name,  # experiment
            f"{random.getrandbits(128):032x}",  # id: uuid4's shape at a tenth of its cost
            time.time() - (time.perf_counter_ns() - job.t0) / 1e9,  # started_at (ns clock)
            job.key,
            live,
            obs,  # candidate
            job.queue_s,
            match,
            score,
            job.inputs,
            job.context,
            trace_id,
            span_id,
            trace_sampled,
        )
        return result, match, compare_failed

    def _count_emitted_locked(
        self, job: Job, obs: Observation, match: bool | None, compare_failed: bool
    ) -> None:
        job.state = DONE
        self._emitted += 1
        if match is True:
            self._matched += 1
        elif match is False:
            self._mismatched += 1
        if obs.status == "error":
            self._candidate_errors += 1
        elif obs.status == "timeout":
            self._timeouts += 1
        self._compare_errors += compare_failed

    def _sinks_now(self) -> tuple[Any, ...]:
        """This experiment's sinks (or the defaults as configured now), and any observers."""
        sinks = self._sinks
        if sinks is None:
            sinks = _state.default_sinks or _default_sink()
        return sinks + _state.observers if _state.observers else sinks

    def _count_sink_error(self) -> None:
        with self._lock:
            self._sink_errors += 1

    def _compare_arms(self, live: Observation, cand: Observation) -> tuple[bool | None, Any]:
        if live.status == "ok" and cand.status == "ok":
            outcome: Any = self._comparator(live.value, cand.value)  # user code: any type
            if isinstance(outcome, bool):
                return outcome, None
            if isinstance(outcome, numbers.Real):
                return None, float(outcome)
            return bool(outcome), None
        if live.status == "error" and cand.status == "error":
            return _compare.errors_equal(live.error, cand.error), None
        return False, None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("shadowdeco: experiment %r: %s", self.name, message)

    def _before_run(self, job: Job) -> None:
        """What the result records of the call, taken before the candidate may mutate it.

        Runs in the caller's context copy (worker thread or task), never on the live path.
        """
        if self._key is not None:
            key = guard("key", self.name, lambda: self._key(*job.args, **job.kwargs))
            job.key = None if key is FAILED else key
        context = self._context
        if context is None:  # first: isinstance(None, Mapping) is an ABC walk per call
            pass
        elif isinstance(context, Mapping):
            job.context = context
        else:
            value = guard("context", self.name, context)
            job.context = None if value is FAILED else value
        if self._record_inputs:
            # A snapshot now, before the candidate may change them; the serializer meets the
            # original objects once, when the result is written (it may not be idempotent).
            job.inputs = self._record_of(self, job.args, job.kwargs)

    # -- reading and ending --------------------------------------------------------------------

    def stats(self) -> Stats:
        """A consistent snapshot: ``sampled == emitted + sum(dropped) + in_flight``."""
        with self._lock:
            with self._live_lock:
                sampled, queue_full = self._sampled, self._queue_full
            dropped = dict(self._dropped)
            if queue_full:
                dropped["queue_full"] = queue_full
            return Stats(
                sampled=sampled,
                skipped=_count_of(self._skipped),
                emitted=self._emitted,
                dropped=MappingProxyType(dropped),
                in_flight=self._in_flight_of(sampled, queue_full),
                matched=self._matched,
                mismatched=self._mismatched,
                candidate_errors=self._candidate_errors,
                timeouts=self._timeouts,
                sink_errors=self._sink_errors,
                sink_drops=MappingProxyType(dict(self._sink_drops)),
                compare_errors=self._compare_errors,
                sampler_errors=self._sampler_errors,
            )

    def _in_flight_locked(self) -> int:
        with self._live_lock:
            sampled, queue_full = self._sampled, self._queue_full
        return self._in_flight_of(sampled, queue_full)

    def _in_flight_of(self, sampled: int, queue_full: int) -> int:
        """Sampled calls not yet emitted or dropped (under the lock; the live counts given)."""
        return sampled - queue_full - self._emitted - sum(self._dropped.values())

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until nothing is in flight; True if that happened within ``timeout`` seconds.

        Do not call it on the event loop that runs this experiment's async candidates (the
        loop would be blocked); ``await experiment.aflush()`` there instead.
        """
        timeout = _check_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._lane.settle_orphans()
        done = self._wait_settled(timeout)
        # Each sink that caught up is flushed even when another one (or a candidate) did not
        # in time: one hanging sink must not keep the others' lines off the disk.  A sink
        # still busy is not flushed from here (its flush could hang this thread too).
        if self._sinks_closed:  # closed: nothing in flight, and its sinks let go of
            return done
        if self._sinks is None:  # results may still be on their way to replaced defaults
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = wait_retired(remaining) and done
        caught_up = []
        for sink in self._sinks_now():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if worker_for(sink).wait_idle(remaining):
                caught_up.append(sink)
            else:
                done = False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._flush_sinks(caught_up, remaining) and done

    def _notify_if_settled_locked(self) -> None:
        # Only when it matters: a flush waiting while the background works through a backlog
        # would otherwise wake (and take the GIL) once per result to look and sleep again.
        if self._settled.waiters and self._in_flight_locked() == 0:
            self._settled.notify_all()

    def _wait_settled(self, timeout: float | None) -> bool:
        """Wait until nothing is in flight, not for the sinks; False past ``timeout``."""
        with self._settled:
            return bool(self._settled.wait_for(lambda: self._in_flight_locked() == 0, timeout))

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """:meth:`flush` for async code: waits in a thread, so the loop keeps running."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.flush, timeout)

    def _flush_sinks(self, sinks: Iterable[Any], timeout: float | None) -> bool:
        """Flush the sinks side by side, each on a thread of its own, up to ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waits = []
        for sink in sinks:
            flush_sink = sink_attribute(sink, "flush")
            if callable(flush_sink):
                waits.append(worker_for(sink).start_flush(flush_sink, timeout, self.name))
        failed = 0
        unfinished = False
        for wait in waits:
            outcome = wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if outcome is FAILED:
                failed += 1
            elif outcome is False:  # the sink says it could not flush in time
                unfinished = True
        if failed:
            with self._lock:
                self._sink_errors += failed
        return not failed and not unfinished

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop shadowing; flush what is pending up to ``timeout``, then drop the rest.

        Calls made after ``close()`` run live only.  What could not finish in time is
        counted as dropped with reason ``shutdown``.  Closing twice is harmless.  Its sinks are
        flushed, and closed unless another registered experiment still uses them.
        """
        timeout = _check_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:  # Lane.put reads it after its put: a job put after drain() is settled
            self._closed = True
        self._refresh()
        self._lane.release_held()  # not left for the timer: the flush below covers them
        self.flush(timeout)
        for job in self._lane.drain():
            if self._settle_drop(job, "shutdown"):
                _cancel(job)  # a candidate in a worker process is stopped (killed), not left hung
        self._lane.release_held()  # since the flush began, by a worker whose next job hangs
        # Idle workers end at once; joining them means no thread of ours still references
        # this experiment (its sinks, their open files) when the interpreter finalizes.
        for worker in self._lane.stop_threads():
            if worker is threading.current_thread():  # closed from its own candidate
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(remaining)
        for task in list(self._lane.tasks):
            loop = task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        _unregister(self)
        self._sinks_closed = True
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        _close_unused_sinks(self._sinks or (), remaining)

    @contextlib.contextmanager
    def _override(self, **changes: Any) -> Iterator[None]:
        """Swap settings for a while (shadowdeco.testing): candidate, sample, compare, sinks,
        timeout, enabled; restored afterwards, also when the body fails."""
        saved = (
            self._candidate,
            (self._sampler, self._rate, self._sample_value, self._code_sampler),
            self._comparator,
            self._sinks,
            self.timeout,
            self._enabled,
        )
        try:
            if "candidate" in changes:
                self.candidate = changes["candidate"]
            if "sample" in changes:
                self.sample = changes["sample"]
            if "compare" in changes:
                self._comparator = _compare.coerce(changes["compare"])
            if "sinks" in changes:
                self._sinks = tuple(changes["sinks"])
            if "timeout" in changes:
                self.timeout = changes["timeout"]
            if "enabled" in changes:
                self.enabled = changes["enabled"]
            yield
        finally:
            candidate, sample, comparator, sinks, timeout, enabled = saved
            self._candidate, self._comparator, self._sinks, self.timeout = (
                candidate,
                comparator,
                sinks,
                timeout,
            )
            # As it was, the config file's rate included, not set again through it.
            self._sampler, self._rate, self._sample_value, self._code_sampler = sample
            self.enabled = enabled

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._settled = Waited(self._lock)
        self._lane.reset_after_fork()
        self._inline_jobs = {}  # the parent's calls: none waits here
        self._started = False  # the parent's threads did not come along
        self._generation += 1
        # What the parent had in flight cannot finish here: count it once, as "fork".
        lost = self._in_flight_locked()
        if lost:
            self._dropped["fork"] = self._dropped.get("fork", 0) + lost

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("on" if self._active else "off")
        return f"<Experiment {self.name!r} {state} sample={self._sample_value!r}>"


def _with_rate(sampler: _sampling.Sampler, p: float) -> _sampling.Sampler | None:
    """``sampler`` with its one rate (a plain rate, or a ``by_key``'s, whose key is kept) set
    to ``p``; None when it holds none, or several (setting each would multiply them)."""
    if _rate_of(sampler) is not None:
        return _sampling.rate(p, param="sample")
    if isinstance(sampler, _sampling.ByKey):
        return _sampling.by_key(sampler.key, p)
    if isinstance(sampler, (_sampling.AllOf, _sampling.AnyOf)):
        parts = [_with_rate(part, p) for part in sampler.samplers]
        if sum(part is not None for part in parts) != 1:
            return None  # none, or several: the file's rate goes in front of the whole
        kept = [
            old if new is None else new for new, old in zip(parts, sampler.samplers, strict=True)
        ]
        join = operator.and_ if isinstance(sampler, _sampling.AllOf) else operator.or_
        return functools.reduce(join, kept)  # as & and | compose them (ALWAYS & x is x)
    return None


def _rate_of(sampler: _sampling.Sampler) -> float | None:
    """A plain rate is decided inline on the live path; other samplers are called."""
    if sampler is _sampling.ALWAYS:
        return 1.0
    if sampler is _sampling.NEVER:
        return 0.0
    if type(sampler) is _sampling.Rate:
        return sampler.rate
    return None


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


def _count_of(counter: itertools.count[int]) -> int:
    # itertools.count has no read method; its repr is "count(N)".
    return int(repr(counter)[6:-1])


# --------------------------------------------------------------------------------------------
# Process-wide state: registry, defaults, kill switch, config file


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.registry: dict[str, Experiment] = {}
        self.retired_drops: dict[str, dict[Any, int]] = {}  # see retired_drops()
        self.default_sinks: tuple[Any, ...] | None = None
        self.logging_sink: tuple[Logging] | None = None
        # Three kill switches; any one of them stops every experiment.  Kept apart so that
        # lifting one (a config file saying enabled) never lifts another (the environment).
        # The environment's is read at import and again when the first experiment is made
        # (see killed()); set at either moment, it is on.
        self.env_at_import = _env_disabled()
        self.env_disabled: bool | None = None
        self.disabled = False  # configure(disabled=...)
        self.file_disabled = False  # the config file's top-level "enabled": false
        self.config: _ConfigWatcher | None = None
        # shadowdeco.testing: sinks every experiment also feeds, and whether a sampled call
        # waits for its own shadow before returning.
        self.observers: tuple[Any, ...] = ()
        self.inline = False

    def killed(self) -> bool:
        env = self.env_disabled
        if env is None:
            # Read once, here, when the first experiment asks (at its decoration), not when
            # shadowdeco is imported: pytest imports it at start-up, for the plugin, before
            # a conftest.py can set SHADOWDECO_DISABLED; so may an app's launcher.
            env = self.env_disabled = self.env_at_import or _env_disabled()
        return env or self.disabled or self.file_disabled


def _env_disabled() -> bool:
    value = os.environ.get("SHADOWDECO_DISABLED", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


_state = _State()


def _refresh_all() -> None:
    for exp in experiments():
        exp._refresh()


def _default_sink() -> tuple[Logging]:
    """The sink of last resort, so results are never silently lost: the stdlib logger."""
    sink = _state.logging_sink
    if sink is None:
        sink = _state.logging_sink = (Logging(),)
    return sink


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry; an equal experiment of that name is shared."""
    with _state.lock:
        existing = _state.registry.get(exp.name)
        if existing is not None:
            if existing._as_decorated != exp._as_decorated:
                raise ValueError(
                    f"name {exp.name!r} is already used by an experiment with other settings; "
                    "choose another name or close() the first"
                )
            return existing
        _state.registry[exp.name] = exp
        flush_before_exit_handlers()  # after the exit handlers of what the app set up so far
        if _state.config is not None:
            _state.config.apply(exp)
        return exp


def _unregister(exp: Experiment) -> None:
    """Take a closed experiment off the registry, keeping its drops (by name) for the
    metrics, which count on: see :func:`retired_drops`."""
    stats = exp.stats()
    with _state.lock:
        if _state.registry.get(exp.name) is exp:
            del _state.registry[exp.name]
            add_drops(_state.retired_drops.setdefault(exp.name, {}), stats)


def add_drops(counts: dict[Any, int], stats: Stats) -> None:
    """Add ``stats``' drops to ``counts``: by reason, and by ``("sink_backlog", sink)`` for
    the results a sink fell too far behind to receive."""
    for reason, count in stats.dropped.items():
        counts[reason] = counts.get(reason, 0) + count
    for sink, count in stats.sink_drops.items():
        counts[("sink_backlog", sink)] = counts.get(("sink_backlog", sink), 0) + count


def retired_drops() -> dict[str, dict[Any, int]]:
    """The drops of the experiments closed so far, by name: by reason, and by
    ``("sink_backlog", sink)`` for what a sink missed.  A cumulative metric goes on from
    them when an experiment of the same name comes back."""
    with _state.lock:
        return {name: dict(drops) for name, drops in _state.retired_drops.items()}


def _close_unused_sinks(
    sinks: Iterable[Any], timeout: float | None, *, keep_defaults: bool = True
) -> None:
    """Close the sinks that no registered experiment (nor, with ``keep_defaults``, the
    process-wide defaults) uses any more, waiting up to ``timeout`` in all for their threads
    to deliver what they hold.  A sink still busy at the deadline (a hanging sink) is closed
    by its own thread when it gets out: closing it under that thread could hang here too."""
    deadline = None if timeout is None else time.monotonic() + timeout
    in_use = {id(s) for exp in experiments() for s in exp._sinks_now()}
    if keep_defaults:
        in_use.update(id(s) for s in _state.default_sinks or ())
    for sink in sinks:
        if id(sink) in in_use:
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        close_sink = sink_attribute(sink, "close")
        if callable(close_sink):
            stop_worker(
                sink, remaining, functools.partial(guard, "sink close", "close", close_sink)
            )
        else:
            stop_worker(sink, remaining)


def experiment(name: str) -> Experiment:
    """The experiment registered under ``name``."""
    with _state.lock:
        try:
            return _state.registry[name]
        except KeyError:
            known = ", ".join(sorted(_state.registry)) or "none"
            raise KeyError(f"no experiment named {name!r} (known: {known})") from None


def experiments() -> list[Experiment]:
    """Every registered experiment, sorted by name."""
    with _state.lock:
        return [_state.registry[name] for name in sorted(_state.registry)]


def flush(timeout: float | None = 10.0) -> bool:
    """Flush every experiment; True if all of them finished within ``timeout`` seconds."""
    timeout = _check_wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for exp in experiments():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ok = exp.flush(remaining) and ok
    return ok


def shutdown(timeout: float | None = 5.0) -> None:
    """Close every experiment (flushing up to ``timeout`` in all) and stop the config watcher.

    Registered at interpreter exit with ``SHADOWDECO_EXIT_TIMEOUT`` seconds (default 5).
    """
    timeout = _check_wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    flush(timeout)
    closing = experiments()
    for exp in closing:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        exp.close(remaining)
    # Each experiment closed the sinks no other one uses; what is left are the process-wide
    # defaults: stop every worker (they drain first), then close those.
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    _close_unused_sinks(_state.default_sinks or (), remaining, keep_defaults=False)
    stop_workers(None if deadline is None else max(0.0, deadline - time.monotonic()))
    with _state.lock:
        watcher, _state.config = _state.config, None
    if watcher is not None:
        watcher.stop()
    stop_background_loop()


_UNSET: Final[Any] = object()


def configure(
    *,
    default_sinks: Iterable[Any] | None = _UNSET,
    serializer: Callable[[Any], Any] | None = _UNSET,
    disabled: bool = _UNSET,
    config_file: str | os.PathLike[str] | None = _UNSET,
    config_interval: float = 5.0,
    max_pending_results: int = _UNSET,
) -> None:
    """Process-wide settings; only the arguments given change.

    * ``default_sinks``: sinks of every experiment created without ``sinks=`` (None: the
      ``shadowdeco`` logger);
    * ``serializer``: converts values for ``to_dict()`` (None: :func:`to_jsonable`);
    * ``disabled``: the kill switch, as ``SHADOWDECO_DISABLED=1``;
    * ``config_file``: a JSON file steering experiments, re-read every ``config_interval``
      seconds when it changed (None stops watching); also ``SHADOWDECO_CONFIG``;
    * ``max_pending_results``: results waiting to be built, and waiting for each sink,
      before new ones are dropped (10,000 by default).
    """
    # Everything is checked before anything changes: a bad argument changes nothing.
    sinks: tuple[Any, ...] | None = None
    if default_sinks is not _UNSET and default_sinks is not None:
        if isinstance(default_sinks, (str, bytes)) or not _iterable(default_sinks):
            raise TypeError(f"default_sinks must be a list of sinks or None, got {default_sinks!r}")
        sinks = tuple(default_sinks)
        for sink in sinks:
            as_emit(sink, param="default_sinks")
    if serializer is not _UNSET and serializer is not None and not callable(serializer):
        raise TypeError(f"serializer must be a callable or None, got {serializer!r}")
    if max_pending_results is not _UNSET:
        bound = _check_positive_int("max_pending_results", max_pending_results)
    if disabled is not _UNSET and not isinstance(disabled, bool):
        raise TypeError(f"disabled must be a bool, got {disabled!r}")
    if isinstance(config_interval, bool) or not isinstance(config_interval, (int, float)):
        raise TypeError(f"config_interval must be a number of seconds, got {config_interval!r}")
    if not math.isfinite(config_interval) or config_interval <= 0:
        raise ValueError(f"config_interval must be positive, got {config_interval!r}")
    if config_file not in (_UNSET, None) and not isinstance(config_file, (str, os.PathLike)):
        raise TypeError(f"config_file must be a path or None, got {config_file!r}")

    if default_sinks is not _UNSET:
        replaced = _state.default_sinks or _state.logging_sink or ()
        _state.default_sinks = sinks
        # The old ones no experiment uses any more deliver what they hold, then close, on
        # their own threads; a flush waits for them (see Experiment.flush).
        _close_unused_sinks(replaced, 0.0)
    if serializer is not _UNSET:
        _result.default_serializer[0] = serializer or to_jsonable
    if max_pending_results is not _UNSET:
        emitter.max_pending = _delivery.max_pending = bound
    if disabled is not _UNSET:
        _state.disabled = disabled
        _refresh_all()
    if config_file is not _UNSET:
        with _state.lock:
            old, _state.config = _state.config, None
        if old is not None:
            old.stop()
        if config_file is None and _state.file_disabled:  # the file's switch goes with it
            _state.file_disabled = False  # (a new file's own load sets it for that file)
            _refresh_all()
        if config_file is not None:
            watcher = _ConfigWatcher(os.fspath(config_file), float(config_interval))
            with _state.lock:
                _state.config = watcher
            if not watcher.start() and _state.file_disabled:
                # Missing or broken: code settings apply, not the previous file's switch.
                _state.file_disabled = False
                _refresh_all()


def reload_config() -> bool:
    """Re-read the config file now (the watcher does it on change); False if it is broken."""
    watcher = _state.config
    return watcher.load() if watcher is not None else False


class _ConfigWatcher:
    """Polls a JSON config file and applies it to the experiments it names.

    Shape: ``{"enabled": true, "experiments": {"churn-v2": {"enabled": false, "sample": 0.05}}}``.
    The top-level ``enabled: false`` is the kill switch.  A file that does not parse or does
    not have this shape is logged and ignored: the last good config stays in force.
    """

    def __init__(self, path: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.config: dict[str, Any] = {}
        self.loaded = threading.Event()  # set after each load attempt (tests wait on it)
        self._seen: tuple[float, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Load the file (True if it applied), then watch it."""
        loaded = self.load()
        self._thread = threading.Thread(target=self._watch, name="shadowdeco-config", daemon=True)
        self._thread.start()
        return loaded

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)  # a load under way ends before another file's applies

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                st = os.stat(self.path)
                seen: tuple[float, int] | None = (st.st_mtime, st.st_size)
            except OSError:
                seen = None
            if seen != self._seen:
                self.load()

    def load(self) -> bool:
        try:
            try:
                st = os.stat(self.path)
                self._seen = (st.st_mtime, st.st_size)
                with open(self.path, encoding="utf-8") as f:
                    config = _parse_config(json.load(f))
            except FileNotFoundError:
                self._seen = None
                log.info("shadowdeco: config file %s not found; code settings apply", self.path)
                return False
            # ArithmeticError: a sample of 400 digits does not make a float.
            except (OSError, ValueError, TypeError, RecursionError, ArithmeticError) as exc:
                log.error(  # noqa: TRY400 - one line per broken file, not a traceback
                    "shadowdeco: config file %s ignored (%s); the last good config stays",
                    self.path,
                    exc,
                )
                return False
            with _state.lock:
                if _state.config is not self:  # stopped meanwhile: another file (or none) rules
                    return False
                self.config = config
                _state.file_disabled = not config.get("enabled", True)
            _refresh_all()
            for exp in experiments():
                self.apply(exp)
            return True
        finally:
            self.loaded.set()

    def apply(self, exp: Experiment) -> None:
        settings = self.config.get("experiments", {}).get(exp.name)
        if not settings:
            return
        if "enabled" in settings:
            exp.enabled = settings["enabled"]
        if "sample" in settings:
            exp._steer_rate(settings["sample"])


def _parse_config(raw: Any) -> dict[str, Any]:
    """Validate the whole file before any of it applies."""
    if not isinstance(raw, dict):
        raise TypeError("the top level must be an object")
    unknown = set(raw) - {"enabled", "experiments"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        raise TypeError(f"enabled must be true or false, got {raw['enabled']!r}")
    exps = raw.get("experiments", {})
    if not isinstance(exps, dict):
        raise TypeError("experiments must be an object")
    for name, settings in exps.items():
        if not isinstance(settings, dict) or set(settings) - {"enabled", "sample"}:
            raise ValueError(f"experiments[{name!r}] may hold only enabled and sample")
        if "enabled" in settings and not isinstance(settings["enabled"], bool):
            raise TypeError(f"experiments[{name!r}].enabled must be true or false")
        if "sample" in settings:
            _sampling.rate(settings["sample"], param=f"experiments[{name!r}].sample")
    return raw


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()
    _delivery.reset_after_fork()
    for exp in list(_state.registry.values()):
        exp._after_fork_in_child()
    watcher = _state.config
    if watcher is not None:  # the watcher thread did not survive the fork: start another
        _state.config = None
        configure(config_file=watcher.path, config_interval=watcher.interval)


def _exit_timeout() -> float:
    raw = os.environ.get("SHADOWDECO_EXIT_TIMEOUT", "5")
    try:
        return max(0.0, float(raw))
    except ValueError:
        log.warning("shadowdeco: SHADOWDECO_EXIT_TIMEOUT=%r is not a number; using 5 s", raw)
        return 5.0


# How long the early exit flush took: the final shutdown has what is left of the timeout
# (the app's own exit handlers in between do not count against it).
_exit_spent: list[float] = []


def _flush_at_exit() -> None:
    """The early exit flush (see :func:`flush_before_exit_handlers`): pending shadows reach
    the sinks before the exit handlers of what the app set up; experiments stay open, for
    calls those handlers still make."""
    start = time.monotonic()
    flush(_exit_timeout())
    _exit_spent.append(time.monotonic() - start)


def _at_exit() -> None:
    """Flush pending shadows at interpreter exit and close everything, within
    ``SHADOWDECO_EXIT_TIMEOUT`` seconds in all (the early flush's time included)."""
    shutdown(max(0.0, _exit_timeout() - sum(_exit_spent)))


def _flush_at_process_end(_: object) -> None:
    # A multiprocessing child ends with os._exit(), skipping atexit; its finalizers still
    # run.  Registered from multiprocessing's own after-fork hook, because the child's
    # bootstrap clears the finalizers it inherited.
    multiprocessing.util.Finalize(None, _at_exit, exitpriority=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
multiprocessing.util.register_after_fork(_state, _flush_at_process_end)
atexit.register(_at_exit)


def flush_before_exit_handlers() -> None:
    """Move the early exit flush after every atexit handler registered so far, so that it
    runs before them (last in, first out): for sinks that write through something with an
    exit handler of its own, such as the OpenTelemetry SDK's TracerProvider, which shuts
    down at exit and would drop what the flush hands it afterwards.  The final shutdown
    stays the first handler registered, so it runs last: calls made by the app's exit
    handlers are still shadowed."""
    atexit.unregister(_flush_at_exit)
    atexit.register(_flush_at_exit)


if os.environ.get("SHADOWDECO_CONFIG"):
    configure(config_file=os.environ["SHADOWDECO_CONFIG"])
