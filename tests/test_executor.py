"""executor=: candidates in any concurrent.futures.Executor, e.g. a process pool."""

from __future__ import annotations

import multiprocessing
import operator
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from helpers import assert_adds_up

import shadowdeco
from shadowdeco import shadow, sinks


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    # spawn: forking a process that runs threads (ours, pytest's) is unsafe.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def test_a_module_level_candidate_runs_in_a_process_pool(pool: ProcessPoolExecutor) -> None:
    """The candidate runs in another process, marked as shadow there, and is compared."""
    memory = sinks.Memory()

    @shadow(candidate=operator.mul, executor=pool, sinks=[memory])
    def predict(a: int, b: int) -> int:
        return a * b

    @shadow(candidate=shadowdeco.in_shadow, executor=pool, sinks=[memory])
    def where() -> bool:
        return shadowdeco.in_shadow()

    assert [predict(i, 3) for i in range(5)] == [0, 3, 6, 9, 12]
    assert where() is False
    assert shadowdeco.flush(60)
    by_exp = {}
    for r in memory.results:
        by_exp.setdefault(r.experiment, []).append(r)
    assert all(r.match for r in by_exp[predict.shadow.name])
    (where_result,) = by_exp[where.shadow.name]
    assert where_result.candidate.value is True  # in_shadow() inside the worker process


def test_unpicklable_candidates_are_recorded_as_errors(pool: ProcessPoolExecutor) -> None:
    """A candidate a process pool cannot pickle is a candidate error, not the caller's."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, executor=pool, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    assert predict.shadow.flush(60)
    (result,) = memory.results
    assert result.candidate.status == "error"
    assert result.candidate.error is not None
    text = (result.candidate.error[0] + result.candidate.error[1]).lower()
    assert "pickle" in text or "local object" in text  # the wording moved in Python 3.13


def test_a_killed_worker_process_is_a_candidate_error(pool: ProcessPoolExecutor) -> None:
    """A candidate that kills its worker process leaves live alone and is counted."""
    memory = sinks.Memory()

    @shadow(candidate=os._exit, executor=pool, sinks=[memory])
    def predict(code: int) -> int:
        return code

    assert predict(3) == 3
    assert predict.shadow.flush(60)
    assert predict(4) == 4  # the pool is broken now: submitting fails at once
    assert predict.shadow.flush(60)
    assert [r.candidate.error[0] for r in memory.results if r.candidate.error] == [
        "concurrent.futures.process.BrokenProcessPool"
    ] * 2
    assert_adds_up(predict.shadow.stats())


def test_any_executor_works() -> None:
    """A ThreadPoolExecutor is an executor too."""
    memory = sinks.Memory()
    with ThreadPoolExecutor(2) as executor:

        @shadow(candidate=abs, executor=executor, sinks=[memory])
        def predict(x: int) -> int:
            return abs(x)

        for i in range(-5, 5):
            predict(i)
        assert predict.shadow.flush(10)
    assert len(memory) == 10
    assert all(r.match for r in memory.results)


def test_thread_executors_run_in_the_callers_context_and_leave_no_mark() -> None:
    """A thread pool candidate sees the caller's contextvars; the pool's threads stay clean."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    memory = sinks.Memory()
    with ThreadPoolExecutor(1) as executor:

        @shadow(candidate=var.get, executor=executor, sinks=[memory])
        def predict() -> str:
            return var.get()

        var.set("caller")
        assert predict() == "caller"
        assert predict.shadow.flush(10)
        assert memory.results[0].candidate.value == "caller"
        assert executor.submit(shadowdeco.in_shadow).result() is False


def test_a_process_pool_replaces_itself_after_a_worker_dies() -> None:
    """shadowdeco.ProcessPool counts a dead worker, starts afresh, and later calls work."""
    memory = sinks.Memory()
    pool = shadowdeco.ProcessPool(1)
    try:

        @shadow(candidate=os._exit, name="killer", executor=pool, sinks=[memory])
        def kill(code: int) -> int:
            return code

        @shadow(candidate=operator.neg, name="after", executor=pool, sinks=[memory])
        def neg(x: int) -> int:
            return -x

        assert kill(3) == 3
        assert kill.shadow.flush(60)
        assert neg(5) == -5
        assert neg.shadow.flush(60)
        assert pool.restarts == 1
        statuses = {r.experiment: r.candidate.status for r in memory.results}
        assert statuses == {"killer": "error", "after": "ok"}
        assert [r.match for r in memory.results if r.experiment == "after"] == [True]
    finally:
        pool.shutdown()


def test_a_process_pool_checks_its_options() -> None:
    """A bad max_workers or nice fails at construction, naming it and the value."""
    with pytest.raises(ValueError, match="max_workers must be a positive int or None, got 0"):
        shadowdeco.ProcessPool(0)
    for bad in (-1, 20, True, 2.5, "10"):
        with pytest.raises(ValueError, match=f"nice must be an int from 0 to 19, got {bad!r}"):
            shadowdeco.ProcessPool(1, nice=bad)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this platform")
@pytest.mark.parametrize("nice", [None, 0, 5])
def test_process_pool_workers_yield_the_cpu_to_live(nice: int | None) -> None:
    """Worker processes lower their CPU priority (by 10 unless told): when the machine is
    busy they take the CPU the live processes leave, not a share of theirs."""
    pool = shadowdeco.ProcessPool(1) if nice is None else shadowdeco.ProcessPool(1, nice=nice)
    try:
        worker_nice = pool.submit(os.nice, 0).result(timeout=60)
    finally:
        pool.shutdown()
    expected = 10 if nice is None else nice
    assert worker_nice == min(19, os.nice(0) + expected)
