"""Delivery: each sink on its own thread and bounded queue, isolated from the others."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import assert_adds_up

import shadowdeco
from shadowdeco import ShadowResult, _delivery, shadow, sinks


def test_a_hanging_sink_does_not_stop_the_other_sinks() -> None:
    """A sink that blocks forever leaves every other sink receiving results."""
    release = threading.Event()
    entered = threading.Event()
    memory = sinks.Memory()

    def hanging(result: ShadowResult) -> None:
        entered.set()
        release.wait(30)

    @shadow(candidate=abs, sinks=[hanging, memory])
    def predict(x: int) -> int:
        return abs(x)

    @shadow(candidate=abs, name="other", sinks=[memory])
    def other(x: int) -> int:
        return abs(x)

    try:
        for i in range(20):
            assert predict(-i) == i
            assert other(-i) == i
        assert entered.wait(10)
        assert len(memory.wait(40, timeout=10)) == 40
        assert other.shadow.flush(10)
        assert not predict.shadow.flush(0.1)  # honest: the hanging sink has not caught up
        stats = predict.shadow.stats()
        assert (stats.emitted, stats.in_flight) == (20, 0)
        assert_adds_up(stats)
    finally:
        release.set()
    assert predict.shadow.flush(10)


def test_a_sink_too_far_behind_loses_results_counted_per_sink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the per-sink bound, a slow sink misses results; stats().sink_drops counts them."""
    release = threading.Event()
    entered = threading.Event()
    memory = sinks.Memory()
    monkeypatch.setattr(_delivery, "max_pending", 5)

    def slow(result: ShadowResult) -> None:
        entered.set()
        release.wait(30)

    @shadow(candidate=abs, sinks=[slow, memory], max_queue=100)
    def predict(x: int) -> int:
        return x

    try:
        predict(0)
        assert entered.wait(10)  # the slow sink holds the first result
        for i in range(1, 20):
            predict(i)
            # One at a time, so the fast sink never falls behind; the slow one does.
            assert len(memory.wait(i + 1, timeout=10)) == i + 1
        release.set()
        assert predict.shadow.flush(10)
        stats = predict.shadow.stats()
        assert stats.emitted == 20
        ((name, count),) = stats.sink_drops.items()
        assert name.endswith("<locals>.slow")
        assert count == 15  # 5 pending (the one in the sink included), 15 missed
        assert_adds_up(stats)
    finally:
        release.set()


def test_a_shared_sink_gets_one_worker_and_every_result() -> None:
    """One sink object shared by experiments receives every result once."""
    seen: list[str] = []
    lock = threading.Lock()

    def shared(result: ShadowResult) -> None:
        with lock:
            seen.append(result.experiment)

    fns = [shadow(candidate=abs, name=f"s{i}", sinks=[shared])(abs) for i in range(3)]
    for _ in range(10):
        for fn in fns:
            fn(-1)
    assert shadowdeco.flush(10)
    assert sorted(seen) == sorted(["s0", "s1", "s2"] * 10)
    names = {t.name for t in threading.enumerate() if t.name.startswith("shadowdeco-sink-")}
    assert len([n for n in names if "shared" in n]) == 1


def test_sink_errors_are_counted_before_flush_returns() -> None:
    """After flush(), sink errors of the flushed results are in stats()."""

    def broken(result: Any) -> None:
        raise RuntimeError("sink down")

    @shadow(candidate=abs, sinks=[broken])
    def predict(x: int) -> int:
        return x

    for i in range(5):
        predict(i)
    assert predict.shadow.flush(10)
    assert predict.shadow.stats().sink_errors == 5
