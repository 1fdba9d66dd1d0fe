"""Hypothesis properties: transparency for any call, exact accounting for any mix."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from helpers import assert_adds_up
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowdeco import shadow, sinks

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
errors = st.sampled_from([ValueError, KeyError, RuntimeError, ZeroDivisionError]).flatmap(
    lambda cls: st.text(max_size=10).map(cls)
)
# What an arm does: return a value, or raise an exception.
outcomes = st.one_of(values.map(lambda v: ("return", v)), errors.map(lambda e: ("raise", e)))


def act(outcome: tuple[str, Any]) -> Any:
    kind, payload = outcome
    if kind == "raise":
        raise payload
    return payload


class Script:
    """What live and candidate do for the current example."""

    live: tuple[str, Any] = ("return", None)
    candidate: tuple[str, Any] = ("return", None)


SCRIPT = Script()


def check_transparent(fn: Any, args: list[Any], run: Any) -> None:
    kind, payload = SCRIPT.live
    if kind == "return":
        assert run(fn, args) is payload
    else:
        with pytest.raises(type(payload)) as excinfo:
            run(fn, args)
        assert excinfo.value is payload


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    live=outcomes,
    candidate=outcomes,
    args=st.lists(values, max_size=3),
    sample=st.sampled_from([0.0, 1.0]),
)
def test_decorated_sync_functions_are_transparent(
    live: tuple[str, Any], candidate: tuple[str, Any], args: list[Any], sample: float
) -> None:
    """For any arguments, return value or exception, the caller sees exactly live's."""
    SCRIPT.live, SCRIPT.candidate = live, candidate

    @shadow(candidate=lambda *a: act(SCRIPT.candidate), name="prop-sync", sample=sample, sinks=[])
    def fn(*a: Any) -> Any:
        return act(SCRIPT.live)

    check_transparent(fn, args, lambda f, a: f(*a))
    fn.shadow.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(live=outcomes, candidate=outcomes, args=st.lists(values, max_size=3))
def test_decorated_async_functions_are_transparent(
    live: tuple[str, Any], candidate: tuple[str, Any], args: list[Any]
) -> None:
    """The same holds for async live functions with async candidates."""
    SCRIPT.live, SCRIPT.candidate = live, candidate

    async def cand(*a: Any) -> Any:
        return act(SCRIPT.candidate)

    @shadow(candidate=cand, name="prop-async", sinks=[])
    async def fn(*a: Any) -> Any:
        return act(SCRIPT.live)

    async def call(f: Any, a: list[Any]) -> Any:
        try:
            return await f(*a)
        finally:
            await f.shadow.aflush(10)

    check_transparent(fn, args, lambda f, a: asyncio.run(call(f, a)))
    fn.shadow.close()


BEHAVIOURS = ["ok", "raise", "slow", "hang", "mutate"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=40),
    threads=st.integers(min_value=1, max_value=4),
)
def test_any_mix_of_candidate_behaviours_conserves(plan: list[str], threads: int) -> None:
    """From several threads, live results are unchanged and the counts add up exactly."""
    memory = sinks.Memory()
    release = threading.Event()
    slow = threading.Event()  # never set: waiting on it is the candidate being slow

    def candidate(i: int, behaviour: str, data: dict[str, Any]) -> int:
        if behaviour == "raise":
            raise ValueError(i)
        if behaviour == "slow":
            slow.wait(0.005)
        elif behaviour == "hang":
            release.wait(10)  # past the 0.05 s timeout, until the example ends
        elif behaviour == "mutate":
            data["items"].clear()
        return i

    # Hung candidates keep their threads until the example ends (I8), so allow one thread
    # per call: the others must not wait behind them for the flush to finish.
    @shadow(
        candidate=candidate,
        name="prop-mix",
        timeout=0.05,
        key=lambda i, behaviour, data: i,
        max_concurrency=len(plan),
        max_queue=1000,
        sinks=[memory],
    )
    def predict(i: int, behaviour: str, data: dict[str, Any]) -> int:
        assert data["items"] == [i]
        return i

    failures: list[str] = []

    def caller(start: int) -> None:
        for i in range(start, len(plan), threads):
            if predict(i, plan[i], {"items": [i]}) != i:
                failures.append(f"call {i} changed")

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    try:
        assert predict.shadow.flush(30)
        stats = predict.shadow.stats()
        assert failures == []
        assert_adds_up(stats)
        assert stats.in_flight == 0
        assert stats.sampled == len(plan)
        assert stats.emitted == len(memory) == len(plan) - sum(stats.dropped.values())
        assert set(stats.dropped) <= {"queue_full"}
        statuses = {r.key: r.candidate.status for r in memory.results}
        for i, behaviour in enumerate(plan):
            if i not in statuses:  # dropped
                continue
            # Any candidate may time out on a loaded machine; a hung one always does.
            expected = {"hang": {"timeout"}, "raise": {"error", "timeout"}}
            assert statuses[i] in expected.get(behaviour, {"ok", "timeout"})
        assert stats.timeouts == list(statuses.values()).count("timeout")
        assert stats.candidate_errors == list(statuses.values()).count("error")
    finally:
        release.set()
        predict.shadow.close()
