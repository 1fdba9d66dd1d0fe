"""``shadow()``: the wrapt wrapper around the live function.

>>> from shadowdeco import shadow, sinks
>>> memory = sinks.Memory()
>>> @shadow(candidate=lambda x: x * 2.0, sinks=[memory])
... def predict(x):
...     return x * 2
>>> predict(21)
42
>>> memory.wait(1)[0].match
True

The live path is the two small functions below: decide, snapshot, call live, enqueue.  The
sync or async variant is chosen once, at decoration.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import random
import types
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from time import perf_counter_ns
from typing import Any, SupportsIndex, TypeVar

import wrapt

from ._experiment import _IMMUTABLE, Experiment, _state, register
from ._runner import _IN_SHADOW, Job

__all__ = ["shadow"]

F = TypeVar("F", bound=Callable[..., Any])

_random = random.random


class _BoundShadowWrapper(wrapt.BoundFunctionWrapper[..., Any]):
    @property
    def shadow(self) -> Experiment:
        experiment: Experiment = self._self_parent._self_experiment
        return experiment

    # A method, classmethod or staticmethod as got from its class or an instance: pickled
    # as Python pickles those (the attribute of its owner), and never copied.

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        owner = self._self_instance
        if owner is None:  # got from the class
            owner = self._self_owner
        name = getattr(self.__wrapped__, "__name__", None)
        if owner is None or not isinstance(name, str):
            raise TypeError(f"cannot pickle {self!r}: it has no owner to be found on")
        return getattr, (owner, name)

    def __copy__(self) -> _BoundShadowWrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _BoundShadowWrapper:
        return self


class _ShadowWrapper(wrapt.FunctionWrapper[..., Any]):
    """The decorated callable; ``.shadow`` is its :class:`Experiment`."""

    __bound_function_wrapper__ = _BoundShadowWrapper

    def __init__(self, wrapped: Any, wrapper: Any, experiment: Experiment) -> None:
        super().__init__(wrapped, wrapper)
        self._self_experiment = experiment

    @property
    def shadow(self) -> Experiment:
        experiment: Experiment = self._self_experiment
        return experiment

    # As a function is (I1): pickled by reference to its name, so a process pool can send
    # it to its workers, and never copied (wrapt's proxy refuses both, as a proxy of any
    # object must).

    def __reduce_ex__(self, protocol: SupportsIndex) -> str:
        qualname = getattr(self.__wrapped__, "__qualname__", None)
        if not isinstance(qualname, str):  # a partial, a callable object: as pickle says
            raise TypeError(f"cannot pickle {self!r}: it has no name to be found by")
        return qualname

    def __copy__(self) -> _ShadowWrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _ShadowWrapper:
        return self


class _FunctionShadowWrapper(_ShadowWrapper):
    """A plain function's wrapper: a call goes straight to the shadow wrapper.

    wrapt's own ``__call__`` first looks for a ``__self__`` on the wrapped function (it may be
    a bound method).  A plain function has none, so every call raised and cleared an
    ``AttributeError``: ~0.26 of the ~0.6 µs a wrapt call costs here, and ~10 µs of latency
    when the call comes after an idle moment (the error's code and data are cold then).
    Methods are unaffected: they are called through the bound wrapper wrapt makes for them.

    Each decorated function has a subclass of its own (:func:`_function_wrapper`) whose
    ``__call__`` is the shadow wrapper itself, its function bound by a ``functools.partial``
    (a static method: called without ``self``; a partial binds like a method from Python
    3.14): one Python frame between the caller and the function.  A ``__call__`` that passed
    ``*args`` and ``**kwargs`` on to the shadow wrapper cost another ~140 ns, a tenth of a
    sampled call.
    """


def _function_wrapper(fn: Any, call: Callable[..., Any], experiment: Experiment) -> Any:
    """``fn`` (a plain function) wrapped, called straight through ``call``."""
    namespace = {
        "__call__": staticmethod(functools.partial(call, fn, None)),
        "__module__": __name__,
    }
    cls = type(_FunctionShadowWrapper.__name__, (_FunctionShadowWrapper,), namespace)
    cls.__qualname__ = _FunctionShadowWrapper.__qualname__
    return cls(fn, _wrapt_wrapper(call), experiment)


def _wrapt_wrapper(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` as wrapt calls a wrapper (methods, callable objects, a function bound later)."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call(wrapped, instance, *args, **kwargs)

    return wrapper


def _is_plain_function(fn: object) -> bool:
    """A ``def`` or ``lambda`` that wrapt would call with no instance: nothing to bind."""
    return type(fn) is types.FunctionType and not hasattr(fn, "__self__")


def shadow(
    candidate: Any,
    *,
    name: str | None = None,
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
) -> Callable[[F], F]:
    """Run ``candidate`` in the background on sampled calls; callers get only the live result.

    See ``docs/decorator.md`` for every option.  Options are checked here, before any
    function is decorated: a bad one raises ``TypeError`` or ``ValueError`` naming it.
    """
    options: dict[str, Any] = {
        "sample": sample,
        "sinks": sinks,
        "compare": compare,
        "timeout": timeout,
        "max_concurrency": max_concurrency,
        "max_queue": max_queue,
        "copy_inputs": copy_inputs,
        "adapt": adapt,
        "key": key,
        "record_inputs": record_inputs,
        "context": context,
        "enabled": enabled,
        "executor": executor,
    }
    if isinstance(sinks, Iterable) and not isinstance(sinks, (str, bytes)):
        options["sinks"] = list(sinks)  # a generator must survive the check below
    # Validate now, with a throwaway experiment, so errors point at the decorator line.
    Experiment("<validating>" if name is None else name, candidate, **options)

    def decorate(fn: F) -> F:
        function = getattr(fn, "__func__", fn)  # classmethod / staticmethod objects
        if not callable(function):
            raise TypeError(f"shadow() decorates a function, got {fn!r}")
        if name is None:
            named = function
            while isinstance(named, functools.partial):  # named after the function it binds
                named = named.func
            # A callable object has its class's names.
            qualname = getattr(named, "__qualname__", type(named).__qualname__)
            exp_name = f"{named.__module__}.{qualname}"
        else:
            exp_name = name
        experiment = register(Experiment(exp_name, candidate, **options))
        if inspect.iscoroutinefunction(function):
            call = _async_wrapper(experiment)
        else:
            call = _sync_wrapper(experiment)
        if _is_plain_function(fn):
            decorated = _function_wrapper(fn, call, experiment)
        else:
            decorated = _ShadowWrapper(fn, _wrapt_wrapper(call), experiment)
        return decorated  # type: ignore[no-any-return]

    return decorate


def _sync_wrapper(exp: Experiment) -> Callable[..., Any]:
    submit, by_sampler, lane = exp._submit, exp._sampled_by_sampler, exp._lane

    def wrapper(wrapped: Any, instance: Any, /, *args: Any, **kwargs: Any) -> Any:
        # Called by a candidate: shadowing it again would recurse; nor is it a live call to
        # count or to spend the sampler's budget on.
        if not exp._active or _IN_SHADOW.get(False):
            return wrapped(*args, **kwargs)
        rate = exp._rate
        if rate is None:
            if not by_sampler(args, kwargs):
                return wrapped(*args, **kwargs)
        elif rate < 1.0 and (rate <= 0.0 or _random() >= rate):
            next(exp._skipped)
            return wrapped(*args, **kwargs)
        # Experiment._admit and _submit, inlined, and a tuple queued for the Job (the lane
        # worker builds it): method calls and the Job's __init__ were half of the cost.
        with exp._live_lock:  # (see Experiment._admit)
            exp._sampled += 1
            full = lane.admitted - lane.left >= exp._max_queue  # (Lane.waiting)
            if full:
                exp._queue_full += 1
            else:
                lane.admitted += 1
        if full:
            return wrapped(*args, **kwargs)
        snap_args, snap_kwargs = args, kwargs  # immutable: shared, not copied
        if exp._copier is not None and (kwargs or not _IMMUTABLE.issuperset(map(type, args))):
            snapshot = exp._snapshot_inputs(args, kwargs)
            if snapshot is None:
                return wrapped(*args, **kwargs)
            snap_args, snap_kwargs = snapshot
        ctx, candidate, gen = contextvars.copy_context(), exp._candidate, exp._generation
        t0 = perf_counter_ns()
        try:
            value = wrapped(*args, **kwargs)
        except BaseException as exc:
            submit(Job(exp, candidate, gen, instance, snap_args, snap_kwargs, ctx, t0), None, exc)
            raise
        if _state.inline or exp._closed or not exp._started or gen != exp._generation:
            # Testing's inline mode, a close meanwhile (this call alone is dropped; the flush
            # goes on with the queue), the first call (threads to start), a fork since.
            submit(Job(exp, candidate, gen, instance, snap_args, snap_kwargs, ctx, t0), value, None)
        else:
            t1 = perf_counter_ns()
            lane.put((candidate, gen, instance, snap_args, snap_kwargs, ctx, t0, t1, value, None))
        return value

    return wrapper


def _async_wrapper(exp: Experiment) -> Callable[..., Any]:
    admit, submit, by_sampler = exp._admit, exp._submit, exp._sampled_by_sampler

    async def call(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not exp._active or _IN_SHADOW.get(False):  # (see the sync wrapper)
            return await wrapped(*args, **kwargs)
        rate = exp._rate
        if rate is None:
            if not by_sampler(args, kwargs):
                return await wrapped(*args, **kwargs)
        elif rate < 1.0 and (rate <= 0.0 or _random() >= rate):
            next(exp._skipped)
            return await wrapped(*args, **kwargs)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without asyncio (another framework, by hand)
            exp._drop_sampled("no_event_loop")
            return await wrapped(*args, **kwargs)
        job = admit(instance, args, kwargs)
        if job is None:
            return await wrapped(*args, **kwargs)
        try:
            value = await wrapped(*args, **kwargs)
        except asyncio.CancelledError:
            # No live answer to compare with (a caller's timeout, the loop shutting down):
            # counted, not shadowed, and nothing started on a loop that may be closing.
            exp._abandon(job, "live_cancelled")
            raise
        except BaseException as exc:
            waiter = submit(job, None, exc, loop)
            if waiter is not None:  # inline mode (testing): its own shadow is recorded first
                await exp._await_inline(waiter)
            raise
        waiter = submit(job, value, None, loop)
        if waiter is not None:
            await exp._await_inline(waiter)
        return value

    def wrapper(wrapped: Any, instance: Any, /, *args: Any, **kwargs: Any) -> Any:
        return call(wrapped, instance, args, kwargs)

    return wrapper
