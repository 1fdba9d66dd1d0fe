"""Test helpers for code that uses shadowdeco (also a pytest plugin: fixtures below).

>>> from shadowdeco import shadow
>>> from shadowdeco.testing import assert_isolated, capture
>>> @shadow(candidate=lambda xs: sorted(xs), sinks=[])
... def rank(xs):
...     return sorted(xs)
>>> assert_isolated(rank, [3, 1, 2])      # hostile candidates cannot touch the live result
>>> with capture() as results:
...     rank([2, 1])
[1, 2]
>>> [r.match for r in results.wait(1)]
[True]

With pytest, no import is needed: the ``shadow_results`` and ``shadow_inline`` fixtures come
with the package (entry point ``pytest11``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any

from .. import _delivery, _experiment, _runner
from .._experiment import Experiment, Stats
from .._result import ShadowResult, error_of
from ..compare import equal
from ..sinks import Memory

__all__ = [
    "HOSTILE",
    "IncompleteCaptureWarning",
    "ShadowCapture",
    "assert_isolated",
    "assert_transparent",
    "capture",
    "inline",
]


class ShadowCapture(Memory):
    """Every result of every experiment while it is installed; filter by experiment."""

    def for_experiment(self, name: str) -> list[ShadowResult]:
        return [r for r in self.results if r.experiment == name]

    def wait(
        self, n: int, timeout: float = 5.0, experiment: str | None = None
    ) -> list[ShadowResult]:
        """Wait until ``n`` results (of ``experiment``, if given) arrived; return them."""
        if experiment is None:
            return super().wait(n, timeout)
        deadline = time.monotonic() + timeout
        while True:
            # Filtered and counted from one snapshot: a result that arrives after it is new
            # to the wait below, which returns at once, rather than counted as seen already.
            snapshot = self.results
            found = [r for r in snapshot if r.experiment == experiment]
            remaining = deadline - time.monotonic()
            if len(found) >= n or remaining <= 0:
                return found
            super().wait(len(snapshot) + 1, remaining)  # until anything new arrives


class IncompleteCaptureWarning(UserWarning):
    """A capture ended while a shadow of a call made inside it was still in flight (or its
    result had not reached every sink), so the capture may lack that result.

    A warning, not an error: the test may not care about that result.  Under pytest's
    ``-W error`` (``filterwarnings = error``) it fails the test (at teardown, for the
    ``shadow_results`` fixture); where a slow shadow is expected, ignore it with
    ``ignore::shadowdeco.testing.IncompleteCaptureWarning`` or wait for the results in the
    test (``results.wait(n)``).
    """


#: How long, in all, a capture waits at its end for the shadows of the calls made inside it.
_CAPTURE_WAIT = 10.0


@contextlib.contextmanager
def capture() -> Iterator[ShadowCapture]:
    """Capture every result produced inside the block, whatever the experiments' own sinks.

    At its end it waits (up to 10 s in all) for the experiments sampled inside the block,
    not for the others: another experiment's slow shadow, left from an earlier test, must
    not hold up every capture after it.  An experiment still not settled then is named in
    an :class:`IncompleteCaptureWarning` (unless the block itself failed).
    """
    sink = ShadowCapture()
    state = _experiment._state
    sampled = {exp: exp.stats().sampled for exp in _experiment.experiments()}
    state.observers = (*state.observers, sink)
    try:
        yield sink
    except BaseException:
        _end_capture(sink, sampled)  # the block's own failure is what matters
        raise
    for message in _end_capture(sink, sampled):
        warnings.warn(message, IncompleteCaptureWarning, stacklevel=3)


def _end_capture(sink: ShadowCapture, sampled: dict[Experiment, int]) -> list[str]:
    """Wait for the experiments sampled since ``sampled`` was counted, then take ``sink``
    off; what did not settle in time, as warnings to give."""
    deadline = time.monotonic() + _CAPTURE_WAIT
    unsettled = []
    try:
        for exp in _experiment.experiments():
            if exp.stats().sampled == sampled.get(exp, 0):
                continue  # not sampled inside the block: nothing of it to wait for
            if not exp.flush(max(0.0, deadline - time.monotonic())):
                unsettled.append(exp)
    finally:
        state = _experiment._state
        state.observers = tuple(o for o in state.observers if o is not sink)
        _release(sink)
    messages = []
    for exp in unsettled:
        in_flight = exp.stats().in_flight
        if in_flight > 0:
            shadows = "1 shadow" if in_flight == 1 else f"{in_flight} shadows"
            what = f"still had {shadows} in flight"
        elif in_flight < 0:  # more endings than sampled calls: a runner bug, said as seen
            what = f"did not settle (stats() shows {in_flight} in flight)"
        else:
            what = "had results not yet taken by all of its sinks"
        messages.append(
            f"capture(): experiment {exp.name!r} {what} after {_CAPTURE_WAIT:g} s, when the "
            "capture ended: the capture may lack results of calls made inside it (a candidate "
            "or sink slower than that, or hung?)"
        )
    return messages


def _release(*sinks: object) -> None:
    """Stop the delivery threads of sinks made here, once what is queued reached them.

    shadowdeco keeps one thread per sink object, and the sink with it, until told to stop:
    without this, every capture (every test using ``shadow_results``) and every check of
    ``assert_isolated`` would leave a thread and its results behind for good.  The sink
    object itself lives on for whoever still holds it (the test reading its results).
    """
    for sink in sinks:
        _delivery.stop_worker(sink, 10.0)


#: Open inline() blocks, in every thread and task: inline mode is on while any is open.
_inline_blocks = 0
_inline_lock = threading.Lock()


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """Inside the block, a sampled call returns only once its shadow is recorded.

    The candidate still runs on shadowdeco's threads, isolated and with its timeout; the call
    just waits for it, so tests are deterministic.  For its own shadow only (its result
    handed to the sinks): a slow or hung shadow of another call must not hold it up.

    The mode is one process-wide flag, read on the live path of every sampled call (a plain
    attribute read, so that it costs nothing when off).  Blocks are counted, so that blocks
    which overlap in two threads or tasks, and end in any order, leave it on while one of
    them is still open and off once the last one has closed.
    """
    _count_inline(+1)
    try:
        yield
    finally:
        _count_inline(-1)


def _count_inline(step: int) -> None:
    global _inline_blocks  # one count for the whole process, as the flag is
    with _inline_lock:
        _inline_blocks += step
        _experiment._state.inline = _inline_blocks > 0


# --------------------------------------------------------------------------------------------
# assert_isolated


class _Hostile(BaseException):
    """Raised by a hostile candidate: not an Exception, like KeyboardInterrupt."""


def _mutate(value: Any, depth: int = 0) -> None:
    """Vandalise every mutable thing reachable from ``value``."""
    if depth > 20:
        return
    if isinstance(value, dict):
        for v in list(value.values()):
            _mutate(v, depth + 1)
        value.clear()
        value["$mutated"] = True
    elif isinstance(value, list):
        for v in value:
            _mutate(v, depth + 1)
        value.clear()
        value.append("$mutated")
    elif isinstance(value, set):
        value.clear()
        value.add("$mutated")
    elif isinstance(value, bytearray):
        value[:] = b"$mutated"
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        for name in list(vars(value)):
            with contextlib.suppress(Exception):
                setattr(value, name, "$mutated")


#: How long a held hostile candidate waits for its check to let it go before it gives up;
#: the check lets it go as soon as the call has returned (or was settled), so the deadline
#: is reached only by a call that waited for its candidate.  Far beyond any pause of a
#: loaded machine: it is an escape, never a measure.
_ESCAPE = 20.0

#: What a held candidate does where the check cannot reach it (in a worker process): it
#: sleeps, bounded.  Hanging: well past its 0.1 s timeout, which the check relies on there.
_DETACHED_HANG = 1.0

#: The least a slow candidate takes (also where its check cannot reach it): let go before
#: it even began, it is still slow.
_SLOW = 0.02


class _Gate:
    """Holds a hostile candidate ("hangs", "is slow") until its check lets it go, and tells
    the check how the wait ended.

    The check lets it go once the call has returned ("is slow"), or once the call's shadow
    was settled as a timeout ("hangs").  A wait that ended by its escape deadline instead
    means that the call did not return until its candidate had ended: it blocked the
    caller (I2, I3), which the check learns without reading a clock.  One gate per check,
    let go right after it: a candidate held until the end of the battery would keep its
    concurrency slot (I8) and hold up the checks after it.

    Pickled into another process (a process pool), it arrives as a :class:`_Detached`
    gate: nothing there hears the check, so the candidate sleeps a bounded while instead.
    """

    detached = False

    def __init__(self, *, release_when: str, detached_sleep: float, least: float = 0.0) -> None:
        self.release_when = release_when  # "returned" or "settled"
        self.detached_sleep = detached_sleep
        self.least = least  # held at least this long, let go or not
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._started = False  # under the lock, as the two below
        self._holding = 0  # runs of the candidate holding now (a wrapper may run it too)
        self._waited_out = False  # a run gave up waiting: sticky
        self._ended = threading.Condition(self._lock)
        self._loops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return _Detached, (self.detached_sleep,)

    def release(self) -> None:
        with self._lock:
            self._released.set()
            loops, self._loops = self._loops, []
        for loop, event in loops:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing waits there
                loop.call_soon_threadsafe(event.set)

    def hold(self) -> None:
        """The candidate's wait, on its thread."""
        self._begin()
        waited_out = False
        try:
            waited_out = not self._released.wait(_ESCAPE)
            if self.least:
                time.sleep(self.least)
        finally:
            self._end(waited_out)

    async def ahold(self) -> None:
        """The candidate's wait, as an async candidate: on its loop, which it leaves free."""
        event = asyncio.Event()
        with self._lock:
            if self._released.is_set():
                event.set()
            else:
                self._loops.append((asyncio.get_running_loop(), event))
        self._begin()
        waited_out = False
        try:
            try:
                await asyncio.wait_for(event.wait(), _ESCAPE)
            except asyncio.TimeoutError:
                waited_out = True
            if self.least:
                await asyncio.sleep(self.least)
        finally:  # also when cancelled at its timeout ("hangs")
            self._end(waited_out)

    def _begin(self) -> None:
        with self._lock:
            self._started = True
            self._holding += 1

    def _end(self, waited_out: bool) -> None:
        with self._lock:
            self._holding -= 1
            self._waited_out = self._waited_out or waited_out
            self._ended.notify_all()

    def waited_for(self) -> bool:
        """After the check let it go: did the call wait until the candidate gave up?"""
        with self._lock:
            if not self._started:  # it never ran here (in another process, or at all)
                return False
            # Let go already: each run ends at once (a wait only to read how it ended).
            self._ended.wait_for(lambda: self._holding == 0, _ESCAPE)
            return self._waited_out


class _Detached:
    """A :class:`_Gate` in another process: a bounded sleep where the gate would wait."""

    detached = True

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep

    def hold(self) -> None:
        time.sleep(self.sleep)


class _Rebuilt:
    """A value a worker process returns that becomes, unpickled in this process, what
    ``make(*args)`` makes: a lock, a coroutine, neither of which crosses processes as is.
    So a candidate in a process pool hands shadowdeco the very value it would have handed
    it from a thread, rather than a pickling error."""

    def __init__(self, make: Callable[..., Any], *args: Any) -> None:
        self.make = make
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.make, self.args


# The hostile candidates: module-level, so that a process pool can pickle them (their gate
# comes as an argument, see functools.partial below); each takes the gate first.


def _raises(gate: Any, /, *a: Any, **k: Any) -> Any:
    raise RuntimeError("hostile candidate")


def _raises_base(gate: Any, /, *a: Any, **k: Any) -> Any:
    raise _Hostile("hostile candidate")


def _raises_interrupt(gate: Any, /, *a: Any, **k: Any) -> Any:
    raise KeyboardInterrupt


def _raises_exit(gate: Any, /, *a: Any, **k: Any) -> Any:
    raise SystemExit(1)


def _hangs(gate: Any, /, *a: Any, **k: Any) -> Any:
    gate.hold()  # until its timeout settled the call, and a while past it


def _is_slow(gate: Any, /, *a: Any, **k: Any) -> Any:
    gate.hold()  # until the call has returned, and 20 ms: slow, but well inside its timeout


def _mutates(gate: Any, /, *a: Any, **k: Any) -> Any:
    for value in (*a, *k.values()):
        _mutate(value)


def _unserializable(gate: Any, /, *a: Any, **k: Any) -> Any:
    return _Rebuilt(threading.Lock) if gate.detached else threading.Lock()


def _coroutine(gate: Any, /, *a: Any, **k: Any) -> Any:
    return _Rebuilt(asyncio.sleep, 0) if gate.detached else asyncio.sleep(0)


async def _as_async(hostile: Callable[..., Any], gate: _Gate, /, *a: Any, **k: Any) -> Any:
    """The same behaviour as an async candidate (of an async function without executor),
    holding on its loop without blocking it."""
    if hostile is _hangs or hostile is _is_slow:
        await gate.ahold()
        return None
    return hostile(gate, *a, **k)


#: The hostile candidates, by name, in the battery's order.
_CANDIDATES: dict[str, Callable[..., Any]] = {
    "raises an Exception": _raises,
    "raises a BaseException subclass": _raises_base,
    "raises KeyboardInterrupt": _raises_interrupt,
    "raises SystemExit": _raises_exit,
    "hangs past its timeout": _hangs,
    "is slow": _is_slow,
    "mutates every mutable argument": _mutates,
    "returns an unserializable value": _unserializable,
    "returns a coroutine where a value was expected": _coroutine,
}


def _battery(is_async: bool, executor: object) -> list[tuple[str, dict[str, Any], _Gate]]:
    """Each check's name, the settings it swaps in, and its own gate.

    Sync candidates, unless the function is async and has no executor: an executor runs a
    callable and never awaits what it returns, so an async candidate there would do nothing
    hostile at all.  The sync ones are module-level functions with their gate bound by
    ``functools.partial``, which a process pool pickles.
    """
    battery = []
    for name, hostile in _CANDIDATES.items():
        hangs, slow = hostile is _hangs, hostile is _is_slow
        gate = _Gate(
            release_when="returned" if slow else "settled",
            detached_sleep=_DETACHED_HANG if hangs else _SLOW,
            least=_SLOW if slow else 0.0,
        )
        if is_async and executor is None:
            candidate = functools.partial(_as_async, hostile, gate)
        else:
            candidate = functools.partial(hostile, gate)
        # The slow one may take up to _ESCAPE when the call blocks on it: a timeout then
        # would hide what the check is there to see.
        timeout = 0.1 if hangs else 2 * _ESCAPE if slow else 10.0
        battery.append((name, {"candidate": candidate, "timeout": timeout}, gate))
    others: list[tuple[str, dict[str, Any]]] = [
        ("a comparator that raises", {"compare": _raise}),
        ("a sink that raises", {"sinks": [_raising_sink()]}),
    ]
    for name, changes in others:
        battery.append((name, changes, _Gate(release_when="settled", detached_sleep=0.0)))
    return battery


def _raise(*a: Any) -> Any:
    raise RuntimeError("hostile comparator or sink")


def _raising_sink() -> Callable[[ShadowResult], None]:
    """A sink that raises: a new one per check, so its delivery thread can be stopped
    afterwards without touching a check running elsewhere."""

    def raising_sink(result: ShadowResult) -> None:
        _raise(result)

    return raising_sink


#: The battery's names, in the order assert_isolated runs them.
HOSTILE = (
    *_CANDIDATES,
    "a comparator that raises",
    "a sink that raises",
)


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("value", what call returned)`` or ``("raised", the exception itself)``."""
    try:
        return "value", call()
    except BaseException as exc:  # noqa: BLE001 - the outcome under test, compared below
        return "raised", exc


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "raised":
        return _same_error(a[1], b[1])
    return _alike(a[1], b[1])


def _same_error(a: BaseException, b: BaseException) -> bool:
    """The same type, and alike arguments and attributes: what pickling (or a copy) keeps of
    an exception, ``__reduce__``, which holds its ``args``, its instance ``__dict__`` and
    what some built-in ones keep apart (an OSError's filename, an ImportError's name).  An
    exception raised anew with the same message, but without what the original carried,
    is a different one (I1: the very exception)."""
    return type(a) is type(b) and _alike(_error_state(a), _error_state(b))


def _error_state(exc: BaseException) -> tuple[Any, ...]:
    try:
        reduced = exc.__reduce__()
    except Exception:  # noqa: BLE001 - a class whose pickling is broken: what it holds directly
        reduced = None
    if not isinstance(reduced, tuple):
        return (exc.args, getattr(exc, "__dict__", None))
    return tuple(reduced[1:])


#: Pairs of parts :func:`_alike` looks at, at most, before it calls two values different.
_ALIKE_BUDGET = 1_000_000

_NOT_PLAIN = (type, FunctionType, BuiltinFunctionType, MethodType, ModuleType)

#: Types whose values a long list of them is compared in one go (see :func:`_alike_walk`).
_LEAVES = frozenset({type(None), bool, int, float, complex, str, bytes})


def _plain(value: Any) -> bool:
    """An instance whose class has no ``__eq__`` of its own: ``==`` would mean ``is``."""
    eq: object = type(value).__eq__
    return eq is object.__eq__ and not isinstance(value, _NOT_PLAIN)


def _alike(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are alike enough to pass for the very same value (I1).

    The helpers compare values made from separate deep copies, so identity cannot be asked
    for; what is asked is everything short of it: the same type all the way down (a tuple is
    not a list, ``1.0`` and ``True`` are not ``1``, in every element, key and attribute),
    and then equal values as :func:`~shadowdeco.compare.equal` sees them (NaN equals NaN;
    a numpy array's dtype must match too).  ``compare.equal`` alone is looser on purpose: it
    compares two models' outputs, which may arrive through JSON.

    An object without an ``__eq__`` of its own (``==`` would mean ``is``) matches another of
    the same class that holds alike state: what a copy (and pickle) carries,
    ``__reduce_ex__``: ``__dict__``, ``__slots__``, or the class's own ``__getstate__``; an
    object that offers none (a lock, a socket) matches only itself.  A dataclass is equal by
    its own ``__eq__`` and, field by field, of the same types.  The walk is iterative and
    follows each pair of parts once, so reference cycles and deep chains end; past
    ``_ALIKE_BUDGET`` pairs, the values count as different.
    """
    try:
        return _alike_walk(a, b)
    except Exception:  # noqa: BLE001 - a part that refuses to be looked at is a difference
        return False


def _alike_walk(a: Any, b: Any) -> bool:
    todo = [(a, b)]
    seen: set[tuple[int, int]] = set()  # pairs already compared or being compared
    keep: list[Any] = []  # parts made during the walk, alive so that their ids stay unique
    while todo:
        x, y = todo.pop()
        if x is y:
            continue
        if type(x) is not type(y):
            return False
        key = (id(x), id(y))
        if key in seen:  # a cycle both share, or a part both share: already on the list
            continue
        if len(seen) >= _ALIKE_BUDGET:
            return False
        seen.add(key)
        keep.append((x, y))
        if isinstance(x, Mapping):
            if len(x) != len(y) or x.keys() != y.keys():
                return False
            y_keys = {k: k for k in y}  # y's own keys, equal to x's: are they of x's types?
            todo += [(k, y_keys[k]) for k in x]
            todo += [(value, y[k]) for k, value in x.items()]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            if not _leaves_alike(x, y):
                todo += zip(x, y, strict=True)
        elif isinstance(x, (set, frozenset)):
            if x != y:
                return False
            y_items = {item: item for item in y}
            todo += [(item, y_items[item]) for item in x]
        elif _plain(x):
            x_state, y_state = _copied_state(x), _copied_state(y)
            if x_state is None or y_state is None or len(x_state) != len(y_state):
                return False
            todo += zip(x_state, y_state, strict=True)
        elif not equal(x, y) or getattr(x, "dtype", None) != getattr(y, "dtype", None):
            return False
        elif dataclasses.is_dataclass(x):
            todo += [
                (getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x) if f.compare
            ]
    return True


def _leaves_alike(x: list[Any] | tuple[Any, ...], y: list[Any] | tuple[Any, ...]) -> bool:
    """A long sequence of plain numbers and strings, of the same types place by place and
    equal, in one go: a model's list of a million floats is no million steps of the walk.
    False means "look at each pair", not "different"."""
    if len(x) < 64:
        return False
    types = list(map(type, x))
    return types == list(map(type, y)) and set(types) <= _LEAVES and equal(x, y)


def _copied_state(value: Any) -> tuple[Any, ...] | None:
    """What ``copy.deepcopy`` would rebuild ``value`` from; None if it cannot be copied so."""
    try:
        reduced = value.__reduce_ex__(4)
    except Exception:  # noqa: BLE001 - cannot be pickled or copied: no state to compare
        return None
    if not isinstance(reduced, tuple):
        return None  # a global's name: only the object itself is alike
    return tuple(list(part) if isinstance(part, Iterator) else part for part in reduced)


def assert_isolated(fn: Any, /, *args: Any, **kwargs: Any) -> None:
    """Assert that no hostile candidate, comparator or sink can change what ``fn`` does.

    ``fn`` is a function decorated with ``@shadow`` (sync or async; a bound method works);
    positional-only, so that a keyword argument of the function named ``fn`` passes on.
    It is called once undecorated for reference, then once per entry of :data:`HOSTILE`,
    each time on fresh deep copies of the arguments, with the shadow forced on and its
    candidate (or comparator, or sink) replaced by a hostile one.  Each call must return an
    alike value or raise an alike exception (the same type, args and attributes) as the
    reference, leave the arguments as the reference left them, and leave a shadow on record
    (the hostile part ran and was counted).  The experiment's settings are restored
    afterwards.

    Alike, as :func:`_alike` says: the same types all the way down, equal values as
    ``shadowdeco.compare.equal`` sees them, and an object without an ``__eq__`` of its own
    by its class and its copied state.
    """
    experiment = getattr(fn, "shadow", None)
    if not isinstance(experiment, Experiment):
        raise TypeError(f"fn must be decorated with @shadow, got {fn!r}")
    undecorated = getattr(fn, "__wrapped__", None)
    is_async = inspect.iscoroutinefunction(fn)
    _refuse_running_loop("assert_isolated", is_async)
    _require_shadowing("assert_isolated", experiment)

    def run(
        target: Callable[..., Any], returned: Callable[[], None] | None = None
    ) -> tuple[tuple[str, Any], Any]:
        """Call ``target`` on fresh copies; ``returned`` is called as soon as it returned."""
        a, k = copy.deepcopy((args, kwargs))
        if not is_async:
            try:
                return _outcome(lambda: target(*a, **k)), (a, k)
            finally:
                if returned is not None:
                    returned()

        async def go() -> Any:
            try:
                return await target(*a, **k)
            finally:
                if returned is not None:
                    returned()
                await experiment.aflush(10)  # tasks on this loop end before it closes

        return _outcome(lambda: asyncio.run(go())), (a, k)

    if undecorated is not None:
        reference, after = run(undecorated)
    else:
        with experiment._override(enabled=False):
            reference, after = run(fn)

    problems: list[str] = []
    battery = _battery(is_async, experiment._executor)
    # The battery's failures are expected and counted: keep them out of the test's log, and
    # out of the log's once-a-minute limit, which would otherwise keep the next real failure
    # of this experiment (its comparator's, its sink's) out of the log for a minute.  Only
    # this experiment's: the failures of any other are logged as always.
    quiet = experiment.name not in _runner.quiet
    if quiet:
        _runner.quiet.add(experiment.name)
    try:
        for name, changes, gate in battery:
            problems += _check(
                experiment,
                fn,
                run,
                name=name,
                reference=reference,
                after=after,
                changes=changes,
                gate=gate,
            )
    finally:
        if quiet:
            _runner.quiet.discard(experiment.name)
        for _, _, gate in battery:  # a check that failed midway let go of nothing
            gate.release()
    if problems:
        raise AssertionError("assert_isolated failed:\n" + "\n".join(f"  - {p}" for p in problems))


def _require_shadowing(helper: str, experiment: Experiment) -> None:
    """Fail at once, naming the cause, when no call can be shadowed: the helpers force the
    experiment on, but not past a kill switch or a close, and a check of calls that were
    not shadowed would test nothing."""
    cause = _cannot_shadow(experiment)
    if cause is not None:
        raise AssertionError(
            f"{helper} failed: no call can be shadowed, so nothing would be tested: {cause}"
        )


def _cannot_shadow(experiment: Experiment) -> str | None:
    """Why no call of ``experiment`` is shadowed, forced on as it is; None if nothing says."""
    if experiment.closed:
        return f"experiment {experiment.name!r} is closed"
    state = _experiment._state
    if not state.killed():
        return None
    if state.env_disabled:
        return "shadowdeco's kill switch is on: SHADOWDECO_DISABLED is set in the environment"
    if state.disabled:
        return "shadowdeco's kill switch is on: shadowdeco.configure(disabled=True)"
    return 'shadowdeco\'s kill switch is on: its config file says "enabled": false'


def _refuse_running_loop(helper: str, is_async: bool) -> None:
    """An async function is run on event loops of the helper's own (``asyncio.run``), which
    cannot start inside a running one: every call would fail alike, and a comparison of two
    such failures would pass without having called anything.  Say so instead."""
    if not is_async:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{helper} runs an async function on event loops of its own: call it from a plain "
        "(sync) test function, not inside a running event loop (an async test, or a sync "
        "function called from one)"
    )


def _check(
    experiment: Experiment,
    fn: Any,
    run: Callable[..., tuple[tuple[str, Any], Any]],
    *,
    name: str,
    reference: tuple[str, Any],
    after: Any,
    changes: dict[str, Any],
    gate: _Gate,
) -> list[str]:
    memory = Memory()
    changes.setdefault("sinks", [])
    changes["sinks"] = [*changes["sinks"], memory]  # every one of them made for this check
    before = experiment.stats()
    try:
        with experiment._override(sample=1.0, enabled=True, **changes):
            # As long as the candidate may run, and a generous margin for the rest.
            wait = (experiment.timeout or 0.0) + 10.0
            outcome, args_after = run(fn, gate.release if gate.release_when == "returned" else None)
            flushed = experiment.flush(wait)
            gate.release()  # "hangs": settled as a timeout by now; it may end
    finally:
        _release(*changes["sinks"])
    stats = experiment.stats()
    problems = []
    where = f"with a candidate that {name}" if "candidate" in changes else f"with {name}"
    if gate.waited_for():
        problems.append(
            f"{where}: the call waited for its candidate: it blocked the caller "
            "(I2 isolation / I3 never blocks)"
        )
    if not _same(outcome, reference):
        problems.append(
            f"{where}: the caller got {_show(outcome)} instead of {_show(reference)} "
            "(I1 transparency / I2 isolation)"
        )
    if not _alike(args_after, after):
        problems.append(f"{where}: the caller's arguments changed (I5 inputs)")
    return problems + _accounting(
        experiment, where, before, stats, flushed=flushed, wait=wait, results=len(memory)
    )


def _accounting(
    experiment: Experiment,
    where: str,
    before: Stats,
    after: Stats,
    *,
    flushed: bool,
    wait: float,
    results: int,
) -> list[str]:
    """What is wrong with how a check's call was shadowed and counted (I4): every sampled
    call ends exactly once, as one emitted result (which the check's sink received) or one
    counted drop, and nothing is left in flight once flush() said so.

    stats() cannot fail to add up by itself (``in_flight`` is what the others leave), so
    what is checked is each call's ending: counted from the changes over the check.
    """
    sampled = after.sampled - before.sampled
    if sampled == 0:
        cause = _cannot_shadow(experiment)
        because = f" ({cause})" if cause else ""
        return [f"{where}: the call was not shadowed, so nothing was tested{because}"]
    emitted = after.emitted - before.emitted
    dropped = {
        reason: count - before.dropped.get(reason, 0)
        for reason, count in after.dropped.items()
        if count != before.dropped.get(reason, 0)
    }
    ended = emitted + sum(dropped.values())
    problems = []
    if not flushed:
        problems.append(
            f"{where}: flush() did not report every shadow settled within {wait:g} s: "
            f"stats() shows {after.in_flight} in flight (I4 accounting)"
        )
    if ended > sampled:
        calls = "1 sampled call" if sampled == 1 else f"{sampled} sampled calls"
        problems.append(
            f"{where}: {calls} ended {ended} times ({emitted} emitted, "
            f"{sum(dropped.values())} dropped): each must end exactly once (I4 accounting)"
        )
    elif flushed and after.in_flight != 0:
        problems.append(
            f"{where}: flush() reported every shadow settled, but stats() shows "
            f"{after.in_flight} in flight (I4 accounting)"
        )
    if flushed and results != emitted:
        problems.append(
            f"{where}: {emitted} result(s) emitted, {results} received by the check's sink "
            "(I4 accounting)"
        )
    if dropped and ended == sampled:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(dropped.items()))
        problems.append(f"{where}: the shadow was dropped ({reasons}), so nothing was tested")
    return problems


def _show(outcome: tuple[str, Any]) -> str:
    kind, payload = outcome
    if kind == "raised":
        name, message = error_of(payload)
        text = f"{name}({message!r})"
        attributes = getattr(payload, "__dict__", None)
        if attributes:
            text += f" with attributes {attributes!r}"
    else:
        text = repr(payload)
    return text if len(text) < 200 else text[:197] + "..."


# --------------------------------------------------------------------------------------------
# Hypothesis


def assert_transparent(
    fn: Any,
    args: Any = None,
    kwargs: Any = None,
    *,
    max_examples: int = 100,
) -> None:
    """For every example of the strategies, ``fn`` does what its undecorated self does.

    ``args`` is a Hypothesis strategy of argument tuples (default: no arguments) and
    ``kwargs`` one of keyword dicts.  The shadow is forced on for the check; each example
    compares the decorated and the undecorated call on fresh copies of the inputs: an alike
    value, or an alike exception, as :func:`assert_isolated` compares them.
    """
    # Imported here: Hypothesis is a test dependency, not one of shadowdeco's.
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415
    from hypothesis import strategies as st  # noqa: PLC0415

    experiment = getattr(fn, "shadow", None)
    undecorated = getattr(fn, "__wrapped__", None)
    if not isinstance(experiment, Experiment) or undecorated is None:
        raise TypeError(f"fn must be decorated with @shadow, got {fn!r}")
    is_async = inspect.iscoroutinefunction(fn)
    _refuse_running_loop("assert_transparent", is_async)
    _require_shadowing("assert_transparent", experiment)

    def call(target: Callable[..., Any], a: tuple[Any, ...], k: dict[str, Any]) -> tuple[str, Any]:
        a, k = copy.deepcopy((a, k))
        if is_async:
            return _outcome(lambda: asyncio.run(target(*a, **k)))
        return _outcome(lambda: target(*a, **k))

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(args if args is not None else st.just(()), kwargs if kwargs is not None else st.just({}))
    def check(a: tuple[Any, ...], k: dict[str, Any]) -> None:
        expected = call(undecorated, a, k)
        sampled = experiment.stats().sampled
        got = call(fn, a, k)
        if experiment.stats().sampled == sampled:  # a property of unshadowed calls proves nothing
            cause = _cannot_shadow(experiment)
            because = f" ({cause})" if cause else ""
            raise AssertionError(
                f"the decorated call was not shadowed, so nothing was tested{because}, "
                f"for args={a!r} kwargs={k!r}"
            )
        assert _same(got, expected), (
            f"decorated {_show(got)} != undecorated {_show(expected)} for args={a!r} kwargs={k!r}"
        )

    with experiment._override(sample=1.0, enabled=True), inline():
        check()
