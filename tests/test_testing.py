"""shadowdeco.testing: the pytest plugin, assert_isolated and assert_transparent."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import inspect
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import KINDS, MODES, build, run_python, run_script
from hypothesis import strategies as st

import shadowdeco
from shadowdeco import _delivery, shadow
from shadowdeco.sinks import Memory
from shadowdeco.testing import (
    HOSTILE,
    ShadowCapture,
    assert_isolated,
    assert_transparent,
    capture,
    inline,
)

REPO = Path(__file__).resolve().parents[1]


def score(features: dict[str, Any], *, scale: float = 1.0) -> float:
    if not features:
        raise ValueError("no features")
    return sum(features["values"]) * scale


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_assert_isolated_holds_for_every_binding(kind: str, mode: str) -> None:
    """The real decorator passes the hostile battery for every binding, sync and async."""
    target = build(kind, mode, score, score, sinks=[])
    assert_isolated(target.call, {"values": [1.0, 2.0]}, scale=2.0)
    assert_isolated(target.call, {})  # live raises: the same exception every time


def test_assert_isolated_restores_the_experiment() -> None:
    """The battery leaves candidate, sample, sinks and timeout as they were."""
    memory = shadowdeco.sinks.Memory()

    @shadow(candidate=abs, sample=0.25, sinks=[memory], timeout=3.0)
    def predict(x: int) -> int:
        return abs(x)

    assert_isolated(predict, -3)
    exp = predict.shadow
    assert (exp.candidate, exp.sample, exp.timeout) == (abs, 0.25, 3.0)
    assert exp._sinks == (memory,)


def _broken(decorated: Any, body: Any) -> Any:
    """A wrapper that poses as @shadow: same .shadow and __wrapped__, broken body."""

    @functools.wraps(decorated)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return body(*args, **kwargs)

    wrapper.shadow = decorated.shadow  # type: ignore[attr-defined]
    wrapper.__wrapped__ = decorated.__wrapped__  # type: ignore[attr-defined]
    return wrapper


def test_assert_isolated_catches_a_wrapper_that_leaks_candidate_exceptions() -> None:
    """A wrapper that lets the candidate's exception reach the caller fails, named."""

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    def leaky(x: int) -> int:
        value = predict(x)
        candidate = predict.shadow.candidate
        hostile = getattr(candidate, "func", None)  # the battery's: partial(hostile, gate)
        if getattr(hostile, "__name__", "") in {
            "_raises",
            "_raises_base",
            "_raises_exit",
            "_raises_interrupt",
        }:
            candidate(x)
        return value

    with pytest.raises(AssertionError) as excinfo:
        assert_isolated(_broken(predict, leaky), -2)
    message = str(excinfo.value)
    assert "with a candidate that raises an Exception: the caller got RuntimeError" in message
    assert "raises SystemExit: the caller got SystemExit" in message
    assert "(I1 transparency / I2 isolation)" in message


def test_assert_isolated_catches_a_wrapper_that_returns_the_candidates_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrapper that returns the candidate's answer instead of live's fails."""
    # The wrapper waits for the shadow inline: it blocks the caller too, reported once the
    # slow candidate gives up waiting for the call to return.
    monkeypatch.setattr(shadowdeco.testing, "_ESCAPE", 2.0)

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    def swapped(x: int) -> Any:
        with inline(), capture() as results:
            predict(x)
        return results.results[-1].candidate.value

    with pytest.raises(AssertionError, match=r"the caller got None instead of 2"):
        assert_isolated(_broken(predict, swapped), -2)


def test_assert_isolated_catches_shared_mutable_inputs() -> None:
    """copy_inputs=False with a mutating candidate is reported as an I5 failure."""

    @shadow(candidate=len, copy_inputs=False, sinks=[])
    def predict(items: list[int]) -> int:
        return len(items)

    with pytest.raises(AssertionError, match=r"mutates every mutable argument: the caller's"):
        assert_isolated(predict, [1, 2, 3])


def test_assert_isolated_catches_a_wrapper_that_never_shadows() -> None:
    """A wrapper that does not shadow at all fails: nothing was tested."""

    @shadow(candidate=abs, sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    with pytest.raises(AssertionError, match="was not shadowed, so nothing was tested"):
        assert_isolated(_broken(predict, predict.__wrapped__), 1)


def test_assert_isolated_rejects_undecorated_functions() -> None:
    """Only @shadow functions can be checked."""
    with pytest.raises(TypeError, match="fn must be decorated with @shadow"):
        assert_isolated(abs, 1)


def test_the_battery_is_complete() -> None:
    """The hostile battery covers what the issue lists."""
    assert len(HOSTILE) == 11
    assert "a sink that raises" in HOSTILE
    assert "returns a coroutine where a value was expected" in HOSTILE


def test_assert_transparent_passes_for_the_decorator() -> None:
    """For generated inputs, decorated == undecorated (values and exceptions)."""

    @shadow(candidate=lambda xs: sorted(xs, reverse=True), sinks=[])
    def rank(xs: list[int]) -> list[int]:
        if len(xs) > 5:
            raise ValueError("too many")
        return sorted(xs)

    assert_transparent(rank, st.tuples(st.lists(st.integers())), max_examples=50)


def test_assert_transparent_catches_a_broken_wrapper() -> None:
    """A wrapper returning the candidate's value is caught with the failing example."""

    @shadow(candidate=lambda x: -x, sinks=[])
    def neg(x: int) -> int:
        return x

    def swapped(x: int) -> Any:
        with inline(), capture() as results:
            neg(x)
        return results.results[-1].candidate.value

    with pytest.raises(AssertionError, match=r"decorated .* != undecorated"):
        assert_transparent(_broken(neg, swapped), st.tuples(st.integers(1, 100)), max_examples=20)


def test_capture_sees_every_experiment_and_filters() -> None:
    """capture() records results of all experiments; filter by name."""
    one = shadow(candidate=abs, name="one", sinks=[])(abs)
    two = shadow(candidate=abs, name="two", sinks=[])(abs)
    with capture() as results:
        one(-1)
        two(-2)
        two(-3)
        assert len(results.wait(2, experiment="two")) == 2
    assert [r.candidate.value for r in results.for_experiment("one")] == [1]
    assert isinstance(results, ShadowCapture)
    assert shadowdeco._experiment._state.observers == ()


def test_capture_and_inline_undo_themselves_when_the_body_fails() -> None:
    """Global state is restored after an exception in the block."""
    with pytest.raises(RuntimeError), capture(), inline():
        raise RuntimeError("test failed")
    assert shadowdeco._experiment._state.observers == ()
    assert shadowdeco._experiment._state.inline is False


def test_the_plugin_works_without_a_conftest(tmp_path: Path) -> None:
    """The fixtures come from the installed entry point, and undo themselves on failure."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import shadowdeco
            from shadowdeco import shadow

            @shadow(candidate=lambda x: x * 2.0, name="user", sinks=[])
            def predict(x):
                return x * 2

            def test_results_right_after_the_call(shadow_results, shadow_inline):
                assert predict(3) == 6
                (result,) = shadow_results.for_experiment("user")  # no flush needed
                assert result.match is True

            def test_a_failing_test(shadow_results, shadow_inline):
                predict(1)
                assert False, "fails on purpose"

            def test_state_was_restored():
                state = shadowdeco._experiment._state
                assert state.observers == () and state.inline is False
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# Nothing kept after a capture or a check: no sink thread, no result held by shadowdeco.


def _sink_threads() -> int:
    return sum(t.name.startswith("shadowdeco-sink-") for t in threading.enumerate())


def _settles_at(count: Callable[[], int], level: int, timeout: float = 10.0) -> int:
    """``count()`` once it is back at ``level`` (threads end a moment after being told)."""
    deadline = time.monotonic() + timeout
    while (now := count()) > level and time.monotonic() < deadline:
        time.sleep(0.01)
    return now


def test_captures_release_their_sink_threads_and_results() -> None:
    """Each capture() (the shadow_results fixture) stops its sink's thread when it ends and
    shadowdeco keeps no reference to it, while the test still reads every result."""

    @shadow(candidate=abs, sinks=[], name="released-capture")
    def predict(x: int) -> int:
        return abs(x)

    with capture() as results:  # the experiment's own threads, started once
        predict(-1)
    sinks, threads = _sink_threads(), threading.active_count()
    for i in range(20):
        with capture() as results:
            for j in range(10):
                predict(-j)
        # Everything produced inside the block was delivered before the block ended.
        assert sorted(r.candidate.value for r in results.results) == list(range(10)), i
    assert _settles_at(_sink_threads, sinks) == sinks
    assert _settles_at(threading.active_count, threads) == threads
    last = weakref.ref(results)
    del results
    gc.collect()
    assert last() is None  # shadowdeco holds no captured result after the block


def test_assert_isolated_releases_its_sink_threads() -> None:
    """assert_isolated stops the threads of the sinks it creates for its checks."""

    @shadow(candidate=abs, sinks=[], name="released-check")
    def predict(x: int) -> int:
        return abs(x)

    assert_isolated(predict, -2)  # the experiment's own threads, started once
    sinks = _sink_threads()
    for _ in range(3):
        assert_isolated(predict, -2)
    assert _settles_at(_sink_threads, sinks) == sinks
    leftover = [w for w in _delivery._workers.values() if isinstance(w.sink, Memory)]
    assert leftover == []


# --------------------------------------------------------------------------------------------
# Values and arguments without __eq__ of their own: compared by what they hold.


class Prediction:
    """A plain result object: no __eq__."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"Prediction({self.label!r})"


class Features:
    """A plain argument object: no __eq__, nested plain objects and a back-reference."""

    def __init__(self) -> None:
        self.age = 31
        self.tags = ["a", "b"]
        self.owner = Slotted(self)


class Slotted:
    __slots__ = ("features", "score")

    def __init__(self, features: Features) -> None:
        self.features = features  # a cycle: Features -> Slotted -> Features
        self.score = 0.5


def test_assert_isolated_compares_plain_objects_by_what_they_hold() -> None:
    """A plain return value and a plain argument, equal in substance, pass."""

    @shadow(candidate=lambda x: Prediction("b"), sinks=[], name="plain-value")
    def predict(x: int) -> Prediction:
        return Prediction("a")

    @shadow(candidate=lambda f: f.age, sinks=[], name="plain-argument")
    def score(f: Features) -> int:
        return f.age

    assert_isolated(predict, 1)
    assert_isolated(score, Features())
    assert_isolated(score, f=Features())


def test_assert_isolated_still_catches_a_mutated_plain_argument() -> None:
    """copy_inputs=False with a candidate that overwrites an attribute is an I5 failure."""

    @shadow(candidate=lambda f: f.age, copy_inputs=False, sinks=[], name="plain-shared")
    def score(f: Features) -> int:
        return f.age

    with pytest.raises(AssertionError, match=r"mutates every mutable argument: the caller's"):
        assert_isolated(score, Features())


def test_assert_isolated_still_catches_a_different_plain_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrapper returning a plain object that differs from live's is caught."""
    # The wrapper waits for the shadow inline: it blocks the caller too, reported once the
    # slow candidate gives up waiting for the call to return.
    monkeypatch.setattr(shadowdeco.testing, "_ESCAPE", 2.0)

    @shadow(candidate=lambda x: Prediction("b"), sinks=[], name="plain-swapped")
    def predict(x: int) -> Prediction:
        return Prediction("a")

    def swapped(x: int) -> Any:
        with inline(), capture() as results:
            predict(x)
        return results.results[-1].candidate.value

    with pytest.raises(AssertionError, match=r"the caller got .* instead of Prediction\('a'\)"):
        assert_isolated(_broken(predict, swapped), 1)


def test_assert_transparent_compares_plain_objects_by_what_they_hold() -> None:
    """The Hypothesis property also accepts equal-in-substance plain values."""

    @shadow(candidate=lambda x: Prediction(str(-x)), sinks=[], name="plain-transparent")
    def predict(x: int) -> Prediction:
        return Prediction(str(x))

    assert_transparent(predict, st.tuples(st.integers()), max_examples=20)


def test_assert_isolated_inside_a_running_loop_says_why_it_cannot() -> None:
    @shadow(candidate=abs, name="isolated-in-loop", sinks=[])
    async def predict(x: int) -> int:
        return x

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="not inside a running event loop"):
            assert_isolated(predict, 1)

    asyncio.run(inside())


def test_assert_isolated_passes_on_a_keyword_argument_named_fn() -> None:
    """``fn`` is positional-only: a keyword argument of that name goes to the function."""

    @shadow(candidate=lambda data, fn: fn(data), sinks=[], name="fn-keyword")
    def apply(data: list[int], fn: Callable[[list[int]], int]) -> int:
        return fn(data)

    assert_isolated(apply, [1, 2], fn=len)


def test_assert_transparent_inside_a_running_loop_says_why_it_cannot() -> None:
    """Both arms of an async function run on loops of their own: inside a running loop each
    would fail the same way, and the property would pass without calling anything."""
    calls = []

    async def candidate(x: int) -> int:
        return x

    @shadow(candidate=candidate, name="transparent-in-loop", sinks=[])
    async def predict(x: int) -> int:
        calls.append(x)
        return x + 1

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="not inside a running event loop"):
            assert_transparent(predict, st.tuples(st.integers()), max_examples=5)

    asyncio.run(inside())
    assert calls == []


def test_capture_wait_counts_the_snapshot_it_filtered() -> None:
    """wait(n, experiment=...) filters and counts one snapshot: a result that arrives just
    after the snapshot is not taken for one already seen (and waited for once more)."""

    @shadow(candidate=abs, name="wait-race", sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    with capture() as seed:
        predict(-1)
    (one,) = seed.results

    class Racing(ShadowCapture):
        """Delivers ``one`` right after the first snapshot of the results is taken."""

        first = True

        @property
        def results(self) -> list[Any]:
            snapshot = super().results
            if self.first:
                self.first = False
                self.emit(one)
            return snapshot

    racing = Racing()
    returned = threading.Event()
    rescued = []

    def rescue() -> None:  # a wait for a second arrival ends only by this (escape deadline)
        if not returned.wait(20):
            rescued.append(True)
            racing.emit(one)

    rescuer = threading.Thread(target=rescue)
    rescuer.start()
    got = racing.wait(1, timeout=60, experiment="wait-race")
    returned.set()
    rescuer.join(60)
    assert rescued == [], "wait() missed the result that arrived after its snapshot"
    assert [r.id for r in got] == [one.id]


def test_inline_blocks_that_overlap_in_two_threads_keep_each_other_on() -> None:
    """inline() is on while any block is open, and off once the last one closed, whatever
    the order in which overlapping blocks (two threads, two tasks) end."""
    state = shadowdeco._experiment._state
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with inline():
            a_in.set()
            assert b_in.wait(30)
        a_out.set()

    def second() -> None:
        assert a_in.wait(30)
        with inline():
            b_in.set()
            assert a_out.wait(30)
            seen["inside the second block, after the first ended"] = bool(state.inline)
        seen["after both blocks"] = bool(state.inline)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == {
        "inside the second block, after the first ended": True,
        "after both blocks": False,
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_inline_waits_for_the_calls_own_shadow_not_for_others(mode: str) -> None:
    """An inline call returns once its own shadow is recorded, even while the shadow of an
    earlier call (another thread's, a test's without inline) still runs."""
    gate = threading.Event()
    ended_by: list[str] = []

    def candidate(x: str) -> str:
        if x == "hang":  # held until the inline call below has returned (escape: 20 s)
            ended_by.append("release" if gate.wait(20) else "deadline")
        return x

    name = f"inline-own-{mode}"
    if mode == "sync":

        @shadow(candidate=candidate, name=name, sinks=[], timeout=60)
        def predict(x: str) -> str:
            return x

        call: Callable[[str], str] = predict
    else:

        @shadow(candidate=candidate, name=name, sinks=[], timeout=60)
        async def apredict(x: str) -> str:
            return x

        def call(x: str) -> str:
            return asyncio.run(apredict(x))

    call("hang")  # not inline: returns at once, its shadow runs on
    with capture() as results:
        with inline():
            assert call("fast") == "fast"
        recorded = [r.candidate.value for r in results.for_experiment(name)]
        gate.set()
    assert ended_by == ["release"], "the inline call waited for another call's shadow"
    assert recorded == ["fast"]  # its own shadow was recorded when it returned


def test_inline_call_finds_its_line_in_a_jsonl_file(tmp_path: Path) -> None:
    """Inline mode also flushes the sinks its result went to: the line is in the file."""
    path = tmp_path / "shadow.jsonl"
    sink = shadowdeco.sinks.JsonLines(str(path))

    @shadow(candidate=abs, name="inline-jsonl", sinks=[sink])
    def predict(x: int) -> int:
        return abs(x)

    with inline():
        predict(-3)
        lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert '"inline-jsonl"' in lines[0]


def test_assert_isolated_leaves_the_failure_log_as_it_found_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The battery's expected failures are neither logged nor counted by the once-a-minute
    limit of the failure log: a real failure right after it is logged."""

    def comparator(live: int, candidate: int) -> bool:
        raise RuntimeError("a real bug in the comparator")

    @shadow(candidate=abs, name="log-budget", sinks=[], compare=comparator)
    def predict(x: int) -> int:
        return abs(x)

    with caplog.at_level(logging.ERROR, logger="shadowdeco"):
        assert_isolated(predict, -1)
        assert not [r for r in caplog.records if "log-budget" in r.getMessage()]
        predict(-2)
        assert predict.shadow.flush(10)
    assert predict.shadow.stats().compare_errors >= 1
    (record,) = [r for r in caplog.records if "log-budget" in r.getMessage()]
    assert "comparator of experiment 'log-budget' raised" in record.getMessage()


@pytest.mark.parametrize(
    ("value", "changed"),
    [
        ([3, 1, 2], tuple),  # a list handed back as a tuple
        (2, float),  # 2 -> 2.0
        (1, bool),  # 1 -> True
        ([[1, 2]], lambda v: [tuple(v[0])]),  # an element's type changed
        ({1: "a"}, lambda v: {1.0: "a"}),  # a key's type changed
        ({"p": 1}, lambda v: {"p": 1.0}),  # a value's type changed
        (frozenset({1}), lambda v: frozenset({1.0})),
    ],
    ids=["list-tuple", "int-float", "int-bool", "element", "key", "dict-value", "set-element"],
)
def test_the_helpers_require_the_very_types_live_returns(value: Any, changed: Any) -> None:
    """I1 says the very object: a value of another type, at any depth, is a difference,
    though compare.equal (made for comparing two models' outputs) calls it equal."""

    @shadow(candidate=lambda x: x, sinks=[], name="very-types")
    def same(x: int) -> Any:
        return value

    def changing(x: int) -> Any:
        return changed(same(x))

    broken = _broken(same, changing)
    with pytest.raises(AssertionError, match=r"the caller got .* instead of"):
        assert_isolated(broken, 1)
    with pytest.raises(AssertionError, match=r"decorated .* != undecorated"):
        assert_transparent(broken, st.tuples(st.integers()), max_examples=5)


def test_the_helpers_compare_exceptions_by_type_args_and_attributes() -> None:
    """An exception raised anew loses what the one live raised carried (errno, filename,
    attributes): that is a difference, though type and message may look alike."""

    @shadow(candidate=abs, sinks=[], name="very-errors")
    def opener(path: str) -> Any:
        raise FileNotFoundError(2, "No such file", path)

    def rebuilt(path: str) -> Any:
        try:
            return opener(path)
        except OSError as exc:
            raise FileNotFoundError(exc.errno, exc.strerror) from None  # no filename

    with pytest.raises(AssertionError, match=r"the caller got FileNotFoundError"):
        assert_isolated(_broken(opener, rebuilt), "/x")

    class Refused(Exception):
        pass

    @shadow(candidate=abs, sinks=[], name="very-error-attributes")
    def refuse(x: int) -> Any:
        exc = Refused("no")
        exc.code = x  # type: ignore[attr-defined]
        raise exc

    def bare(x: int) -> Any:
        try:
            return refuse(x)
        except Refused as exc:
            raise Refused(*exc.args) from None  # the same type and message, no .code

    with pytest.raises(AssertionError, match=r"decorated .* != undecorated"):
        assert_transparent(_broken(refuse, bare), st.tuples(st.integers()), max_examples=5)
    assert_isolated(refuse, 3)  # the very exception passes through: alike


@pytest.mark.parametrize("switch", ["configure", "environment", "closed"])
def test_the_helpers_say_when_nothing_can_be_shadowed(
    switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a kill switch, or with the experiment closed, no call is shadowed: both helpers
    fail, naming the cause, rather than pass (or fail) having tested nothing."""

    @shadow(candidate=lambda x: x, name=f"switched-off-{switch}", sinks=[])
    def predict(x: int) -> int:
        return x

    if switch == "configure":
        shadowdeco.configure(disabled=True)  # lifted by the conftest's clean-up
        cause = r"shadowdeco's kill switch is on: shadowdeco\.configure\(disabled=True\)"
    elif switch == "environment":
        monkeypatch.setattr(shadowdeco._experiment._state, "env_disabled", True)
        shadowdeco._experiment._refresh_all()
        cause = "shadowdeco's kill switch is on: SHADOWDECO_DISABLED is set in the environment"
    else:
        predict.shadow.close()
        cause = f"experiment 'switched-off-{switch}' is closed"
    with pytest.raises(AssertionError, match=f"nothing would be tested: {cause}"):
        assert_transparent(predict, st.tuples(st.integers()), max_examples=5)
    with pytest.raises(AssertionError, match=f"nothing would be tested: {cause}"):
        assert_isolated(predict, 1)
    assert predict.shadow.stats().sampled == 0


def test_assert_transparent_catches_a_wrapper_that_never_shadows() -> None:
    """A property that held without a single call shadowed proved nothing: it fails."""

    @shadow(candidate=abs, sinks=[], name="transparent-never-shadowed")
    def predict(x: int) -> int:
        return abs(x)

    with pytest.raises(AssertionError, match="was not shadowed, so nothing was tested"):
        assert_transparent(
            _broken(predict, predict.__wrapped__), st.tuples(st.integers()), max_examples=5
        )


def _break_the_last_check(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A broken runner, in the battery's last check only (a sink that raises), so the
    checks before it settle as they should: each result emitted twice, or lost."""
    emit = shadowdeco._experiment.Experiment._emit

    def broken(self: Any, job: Any, obs: Any) -> None:
        if not any(getattr(s, "__name__", "") == "raising_sink" for s in self._sinks or ()):
            emit(self, job, obs)
        elif how == "twice":
            emit(self, job, obs)
            emit(self, job, obs)

    monkeypatch.setattr(shadowdeco._experiment.Experiment, "_emit", broken)


@pytest.mark.slow
def test_assert_isolated_reports_a_result_emitted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """I4: each sampled call ends exactly once; a second emission is named as such."""
    monkeypatch.setattr(shadowdeco.testing, "_CAPTURE_WAIT", 0.5)

    @shadow(candidate=abs, name="emitted-twice", sinks=[], timeout=0.5)
    def predict(x: int) -> int:
        return abs(x)

    _break_the_last_check(monkeypatch, "twice")
    with (
        pytest.warns(shadowdeco.testing.IncompleteCaptureWarning, match=r"shows -1 in flight\)"),
        capture(),
        pytest.raises(AssertionError) as excinfo,
    ):
        assert_isolated(predict, -2)
    predict.shadow.close(0)  # its counts are broken: nothing to wait for at the end
    lines = str(excinfo.value).splitlines()[1:]
    assert all(line.startswith("  - with a sink that raises: ") for line in lines), lines
    message = "\n".join(lines)
    assert "1 sampled call ended 2 times (2 emitted, 0 dropped)" in message
    assert "stats() shows -1 in flight" in message


@pytest.mark.slow
def test_assert_isolated_reports_a_shadow_that_never_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flush that timed out is reported as such, with what stats() shows in flight."""

    @shadow(candidate=abs, name="never-settled", sinks=[], timeout=0.5)
    def predict(x: int) -> int:
        return abs(x)

    _break_the_last_check(monkeypatch, "lost")
    with pytest.raises(AssertionError) as excinfo:
        assert_isolated(predict, -2)
    predict.shadow.close(0)  # its counts are broken: nothing to wait for at the end
    (line,) = str(excinfo.value).splitlines()[1:]
    assert line == (
        "  - with a sink that raises: flush() did not report every shadow settled within "
        "10.5 s: stats() shows 1 in flight (I4 accounting)"
    )


# --------------------------------------------------------------------------------------------
# The battery's slow and hanging candidates: held per check, released by the check.


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_assert_isolated_passes_with_one_candidate_at_a_time(mode: str) -> None:
    """max_concurrency=1: the hanging candidate keeps the only slot until it really ends
    (I8), so it is let go right after its own check, not at the end of the battery."""
    target = build("function", mode, score, score, sinks=[], max_concurrency=1)
    assert_isolated(target.call, {"values": [1.0, 2.0]}, scale=2.0)


def _blocking(decorated: Any, mode: str) -> Any:
    """A wrapper whose caller waits for the call's candidate to end (violates I2/I3)."""
    if mode == "sync":

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = decorated(*args, **kwargs)
            decorated.shadow.flush(120)
            return value

        return _broken(decorated, wrapper)

    @functools.wraps(decorated)
    async def awrapper(*args: Any, **kwargs: Any) -> Any:
        value = await decorated(*args, **kwargs)
        await decorated.shadow.aflush(120)
        return value

    awrapper.shadow = decorated.shadow  # type: ignore[attr-defined]
    awrapper.__wrapped__ = decorated.__wrapped__  # type: ignore[attr-defined]
    return awrapper


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_assert_isolated_catches_a_caller_that_waits_for_its_candidate(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """I2/I3: a call that returns only once its candidate ended blocked the caller.  The
    slow candidate waits until the check lets it go, after the call returned; a wait that
    ended by its escape deadline instead means the call waited for it (no clock asked)."""
    monkeypatch.setattr(shadowdeco.testing, "_ESCAPE", 2.0, raising=False)  # reached: broken
    target = build("function", mode, score, score, sinks=[])
    with pytest.raises(AssertionError) as excinfo:
        assert_isolated(_blocking(target.call, mode), {"values": [1.0]})
    assert (
        "with a candidate that is slow: the call waited for its candidate: it blocked the "
        "caller (I2 isolation / I3 never blocks)"
    ) in str(excinfo.value)


def test_assert_isolated_catches_a_candidate_run_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrapper that runs the candidate itself, on the caller's thread (as Scientist-style
    libraries do), blocks the caller for as long as the candidate hangs."""
    monkeypatch.setattr(shadowdeco.testing, "_ESCAPE", 2.0, raising=False)

    @shadow(candidate=abs, sinks=[], name="on-the-callers-thread")
    def predict(x: int) -> int:
        return abs(x)

    def in_line(x: int) -> int:
        value = predict(x)
        with contextlib.suppress(BaseException):
            returned = predict.shadow.candidate(x)
            if inspect.iscoroutine(returned):
                returned.close()
        return value

    with pytest.raises(AssertionError) as excinfo:
        assert_isolated(_broken(predict, in_line), -2)
    message = str(excinfo.value)
    assert "hangs past its timeout: the call waited for its candidate: it blocked" in message
    assert "is slow: the call waited for its candidate: it blocked the caller" in message


# --------------------------------------------------------------------------------------------
# With executor=: the hostile candidates are sync, and pickle for a process pool.


def _hostile_outcomes(results: list[Any]) -> set[Any]:
    return {
        (r.candidate.status, r.candidate.error[0] if r.candidate.error else None) for r in results
    }


@pytest.mark.parametrize("pool", ["threads", "processes", "shadowdeco-processes"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_assert_isolated_hostile_candidates_run_in_an_executor(mode: str, pool: str) -> None:
    """With executor=, the candidates do their hostile things there: no async candidate an
    executor never awaits, no closure a process pool cannot pickle."""
    executor: Any
    if pool == "threads":
        executor = concurrent.futures.ThreadPoolExecutor(2)
    elif pool == "processes":
        executor = concurrent.futures.ProcessPoolExecutor(2)
    else:
        executor = shadowdeco.ProcessPool(2)
    try:
        if mode == "sync":

            @shadow(candidate=abs, sinks=[], name=f"executor-{pool}-{mode}", executor=executor)
            def predict(x: int) -> int:
                return abs(x)

            with capture() as results:
                assert_isolated(predict, -2)
        else:

            @shadow(candidate=abs, sinks=[], name=f"executor-{pool}-{mode}", executor=executor)
            async def apredict(x: int) -> int:
                return abs(x)

            with capture() as results:
                assert_isolated(apredict, -2)
    finally:
        shadowdeco.shutdown(10)
        executor.shutdown()
    outcomes = _hostile_outcomes(results.results)
    errors = [r.candidate.error[1] for r in results.results if r.candidate.error]
    assert not [e for e in errors if "pickle" in e.lower()], errors
    assert {
        ("error", "RuntimeError"),
        ("error", "shadowdeco.testing._Hostile"),
        ("error", "KeyboardInterrupt"),
        ("error", "SystemExit"),
        ("timeout", "TimeoutError"),
        ("error", "TypeError"),  # the coroutine, closed: "returned a coroutine ..."
        ("ok", None),
    } == outcomes
    assert errors.count("the candidate returned a coroutine that was never awaited") == 1


# --------------------------------------------------------------------------------------------
# The end of a capture: waits for what was sampled inside it, and says when it could not.


def test_capture_waits_only_for_experiments_sampled_inside_it() -> None:
    """A shadow still running for another experiment (an earlier test's) is not waited for
    when a capture ends."""
    gate = threading.Event()
    ended_by: list[str] = []

    def held(x: int) -> int:
        ended_by.append("release" if gate.wait(8) else "deadline")  # escape < capture's wait
        return x

    @shadow(candidate=held, name="unrelated-pending", sinks=[], timeout=60)
    def other(x: int) -> int:
        return x

    @shadow(candidate=abs, name="captured", sinks=[])
    def predict(x: int) -> int:
        return abs(x)

    other(1)  # not captured, still running
    with capture() as results:
        predict(-1)
    gate.set()
    assert other.shadow.flush(30)
    assert ended_by == ["release"], "the capture waited for an experiment it did not sample"
    assert [r.candidate.value for r in results.for_experiment("captured")] == [1]


def test_capture_warns_when_a_shadow_is_still_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture that ends without a result of a call made inside it says so, naming the
    experiment, rather than hold fewer results in silence."""
    monkeypatch.setattr(shadowdeco.testing, "_CAPTURE_WAIT", 0.5, raising=False)
    gate = threading.Event()

    @shadow(candidate=lambda x: gate.wait(60), name="still-running", sinks=[], timeout=120)
    def predict(x: int) -> int:
        return x

    try:
        with (
            pytest.warns(UserWarning, match="experiment 'still-running' still had 1 shadow") as w,
            capture() as results,
        ):
            predict(1)
    finally:
        gate.set()
    assert results.results == []
    (warning,) = w.list
    assert warning.category is getattr(shadowdeco.testing, "IncompleteCaptureWarning", None)
    assert predict.shadow.flush(30)
    assert shadowdeco._experiment._state.observers == ()


def test_capture_does_not_warn_over_a_failure_in_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the block itself failed, that failure is what the test reports."""
    monkeypatch.setattr(shadowdeco.testing, "_CAPTURE_WAIT", 0.5, raising=False)
    gate = threading.Event()

    @shadow(candidate=lambda x: gate.wait(60), name="failed-block", sinks=[], timeout=120)
    def predict(x: int) -> int:
        return x

    def block() -> None:
        with capture():
            predict(1)
            raise RuntimeError("the test's own failure")

    try:
        with pytest.raises(RuntimeError, match="the test's own failure"):
            block()
    finally:
        gate.set()
    assert predict.shadow.flush(30)


# --------------------------------------------------------------------------------------------
# The plugin, loaded at pytest's start: what it imports then must not get in the way.


def _pytest_in(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # SHADOWDECO_DISABLED empty: the kill switch off, whatever the outer environment says.
    return run_python(*args, cwd=tmp_path, timeout=120, SHADOWDECO_DISABLED="")


def test_the_kill_switch_set_in_a_conftest_applies(tmp_path: Path) -> None:
    """SHADOWDECO_DISABLED set in a conftest.py (before the code under test is imported)
    stops shadowing, though the plugin imported shadowdeco when pytest started."""
    (tmp_path / "conftest.py").write_text('import os\nos.environ["SHADOWDECO_DISABLED"] = "1"\n')
    (tmp_path / "test_switch.py").write_text(
        textwrap.dedent(
            """
            from shadowdeco import shadow

            @shadow(candidate=abs, name="switched", sinks=[])
            def predict(x):
                return abs(x)

            def test_not_shadowed():
                assert predict(-1) == 1
                assert predict.shadow.stats().sampled == 0
            """
        )
    )
    proc = _pytest_in(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_pytest_started_after_shadowdeco_was_imported_runs_under_warnings_as_errors(
    tmp_path: Path,
) -> None:
    """A runner that imported shadowdeco before pytest.main() (the app, a script) does not
    crash on pytest's "already imported, cannot be rewritten" warning made an error."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    error\n")
    (tmp_path / "run.py").write_text(
        "import sys\nimport shadowdeco\nimport pytest\n"
        'sys.exit(pytest.main(["-q", "-p", "no:cacheprovider"]))\n'
    )
    (tmp_path / "test_fixture.py").write_text("def test_ok(shadow_results):\n    pass\n")
    proc = _pytest_in(tmp_path, "run.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_environment_kill_switch_set_at_import_stays_on(tmp_path: Path) -> None:
    """SHADOWDECO_DISABLED present when shadowdeco was imported holds even if the variable is
    gone by the first experiment (a launcher that cleans its environment)."""
    source = """
        import os, shadowdeco
        del os.environ["SHADOWDECO_DISABLED"]

        @shadowdeco.shadow(candidate=lambda x: x, sinks=[])
        def f(x):
            return x

        f(1)
        print(f.shadow.stats().sampled)
    """
    proc = run_script(source, tmp_path, SHADOWDECO_DISABLED="1")
    assert (proc.returncode, proc.stdout.strip()) == (0, "0"), proc.stderr
