"""Fault catalogue, candidate side: whatever the candidate (or its helpers) does, live is
unchanged and every sampled call is accounted for exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers import MODES, Gate, build
from reliability_helpers import settle

from shadowdeco import shadow, sinks


class Hostile(BaseException):
    """A BaseException subclass that is not an Exception."""


LIVE = object()  # the live result: callers must get this very object


def original() -> dict[str, Any]:
    return {"items": [1, 2], "meta": {"k": "v"}}


def run_fault(mode: str, candidate: Any, **options: Any) -> tuple[list[Any], Any]:
    """Call a decorated function once with ``candidate``; check live, settle, return results."""
    memory = sinks.Memory()
    target = build("function", mode, lambda data: LIVE, candidate, sinks=[memory], **options)
    data = original()
    assert target(data) is LIVE
    assert data == original()
    stats = settle(target.experiment)
    return memory.results, stats


def assert_one_candidate_error(results: list[Any], stats: Any, error_type: str) -> None:
    (result,) = results
    assert result.candidate.status == "error"
    assert result.candidate.error[0] == error_type
    assert result.live.value is LIVE
    assert result.match is False
    assert (stats.sampled, stats.emitted, stats.candidate_errors) == (1, 1, 1)
    assert (stats.timeouts, stats.compare_errors, stats.sink_errors) == (0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
def test_candidate_raises_an_exception(mode: str) -> None:
    """A candidate that raises an Exception is recorded as a candidate error."""

    def candidate(data: Any) -> Any:
        raise ValueError("candidate bug")

    results, stats = run_fault(mode, candidate)
    assert_one_candidate_error(results, stats, "ValueError")
    assert results[0].candidate.error[1] == "candidate bug"


@pytest.mark.parametrize("mode", MODES)
def test_candidate_raises_a_base_exception_subclass(mode: str) -> None:
    """A candidate that raises a BaseException subclass stays in its own thread or task."""

    def candidate(data: Any) -> Any:
        raise Hostile("not an Exception")

    results, stats = run_fault(mode, candidate)
    assert_one_candidate_error(results, stats, f"{__name__}.Hostile")


@pytest.mark.parametrize("mode", MODES)
def test_candidate_raises_keyboard_interrupt(mode: str) -> None:
    """A candidate that raises KeyboardInterrupt neither interrupts the caller nor its loop."""

    def candidate(data: Any) -> Any:
        raise KeyboardInterrupt

    results, stats = run_fault(mode, candidate)
    assert_one_candidate_error(results, stats, "KeyboardInterrupt")


@pytest.mark.parametrize("mode", MODES)
def test_candidate_raises_system_exit(mode: str) -> None:
    """A candidate that raises SystemExit neither ends the process nor the caller's loop."""

    def candidate(data: Any) -> Any:
        raise SystemExit(3)

    results, stats = run_fault(mode, candidate)
    assert_one_candidate_error(results, stats, "SystemExit")


@pytest.mark.parametrize("mode", MODES)
def test_candidate_recurses_without_end(mode: str) -> None:
    """A candidate that overflows the stack is recorded as a RecursionError."""

    def candidate(data: Any) -> Any:
        return candidate(data)

    results, stats = run_fault(mode, candidate)
    assert_one_candidate_error(results, stats, "RecursionError")


def test_candidate_hangs_past_its_timeout() -> None:
    """A hung candidate yields a timeout result at its deadline and its late answer is ignored."""
    gate = Gate()
    memory = sinks.Memory()

    @shadow(candidate=gate, timeout=0.1, sinks=[memory])
    def predict(data: Any) -> Any:
        return LIVE

    data = original()
    assert predict(data) is LIVE
    assert gate.wait_entered()
    stats = settle(predict.shadow)  # settles at the deadline, the gate still shut
    assert not gate.finished.is_set()
    assert (stats.sampled, stats.emitted, stats.timeouts, stats.candidate_errors) == (1, 1, 1, 0)
    gate.release.set()
    assert gate.finished.wait(10)
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.timeouts) == (1, 1)  # the late answer is not a second result
    (result,) = memory.results
    assert result.candidate.status == "timeout"
    assert result.candidate.error[0] == "TimeoutError"
    assert result.match is None


def test_async_candidate_of_a_sync_function_hangs_past_its_timeout() -> None:
    """A hung async candidate of a sync function times out and is cancelled on its loop."""
    cancelled = threading.Event()
    memory = sinks.Memory()

    async def candidate(data: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return data

    @shadow(candidate=candidate, timeout=0.1, sinks=[memory])
    def predict(data: Any) -> Any:
        return LIVE

    assert predict(original()) is LIVE
    stats = settle(predict.shadow)
    assert cancelled.wait(10)
    assert (stats.sampled, stats.emitted, stats.timeouts) == (1, 1, 1)
    assert memory.results[0].candidate.status == "timeout"


def test_candidate_is_slow() -> None:
    """Slow candidates finish after every live call has returned, and each is emitted ok."""
    gate = Gate()
    memory = sinks.Memory()

    @shadow(candidate=gate, max_concurrency=2, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(10)] == list(range(10))  # none of them waited
    assert gate.wait_entered(2)
    assert predict.shadow.stats().in_flight == 10
    gate.release.set()
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, stats.candidate_errors) == (10, 10, 0)
    assert [r.candidate.status for r in memory.results] == ["ok"] * 10
    assert stats.mismatched == 10  # "gate" is not the live value


def test_candidate_mutates_its_inputs() -> None:
    """A candidate that mutates its arguments changes neither the caller's object nor live."""
    seen_by_live: list[Any] = []
    memory = sinks.Memory()

    def candidate(data: dict[str, Any]) -> str:
        data["items"].append("candidate")
        data["meta"].clear()
        data.clear()
        return "mutated"

    @shadow(candidate=candidate, record_inputs=True, sinks=[memory])
    def predict(data: dict[str, Any]) -> Any:
        seen_by_live.append(repr(data))
        return LIVE

    data = original()
    assert predict(data) is LIVE
    stats = settle(predict.shadow)
    assert data == original()
    assert seen_by_live == [repr(original())]
    (result,) = memory.results
    assert result.inputs["args"][0] == original()  # recorded before the candidate ran
    assert result.candidate.value == "mutated"
    assert (stats.emitted, stats.candidate_errors) == (1, 0)


def test_candidate_returns_an_unserializable_value(tmp_path: Any) -> None:
    """An unserializable candidate value is written spelled out, never dropped or a sink error."""
    path = tmp_path / "out.jsonl"
    jsonl = sinks.JsonLines(path, flush_interval=3600)

    @shadow(candidate=lambda x: threading.Lock(), sinks=[jsonl])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    stats = settle(predict.shadow)
    assert (stats.emitted, stats.sink_errors, stats.mismatched) == (1, 0, 1)
    (line,) = path.read_text().splitlines()
    value = json.loads(line)["candidate"]["value"]
    assert value["$type"] == "_thread.lock"


def test_adapt_raises() -> None:
    """An adapt= that raises is the candidate's error, not the caller's."""

    def adapt(data: Any) -> Any:
        raise LookupError("no such feature")

    results, stats = run_fault("sync", lambda data: LIVE, adapt=adapt)
    assert_one_candidate_error(results, stats, "LookupError")


def test_key_and_context_raise() -> None:
    """key= and context= callables that raise leave those fields None and the result goes out."""

    def broken(*args: Any) -> Any:
        raise KeyError("nope")

    results, stats = run_fault("sync", lambda data: LIVE, key=broken, context=broken)
    (result,) = results
    assert (result.key, result.context, result.match) == (None, None, True)
    assert (stats.emitted, stats.candidate_errors) == (1, 0)


def test_sampler_raises() -> None:
    """A sampler that raises leaves the call unsampled and counts a sampler error."""

    def sampler(data: Any) -> bool:
        raise RuntimeError("sampler bug")

    memory = sinks.Memory()

    @shadow(candidate=lambda data: data, sample=sampler, sinks=[memory])
    def predict(data: Any) -> Any:
        return LIVE

    for _ in range(3):
        assert predict(original()) is LIVE
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.skipped, stats.sampler_errors) == (0, 3, 3)
    assert len(memory) == 0


def test_inputs_cannot_be_copied() -> None:
    """An argument deepcopy cannot copy serves live and is dropped as copy_failed."""

    class Uncopyable:
        def __deepcopy__(self, memo: Any) -> Any:
            raise TypeError("no copies")

    @shadow(candidate=lambda x: x, sinks=[])
    def predict(x: Any) -> Any:
        return LIVE

    arg = Uncopyable()
    assert predict(arg) is LIVE
    assert predict(1) is LIVE
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (2, 1, {"copy_failed": 1})


def test_queue_is_full() -> None:
    """Past max_concurrency running and max_queue waiting, samples are dropped as queue_full."""
    gate = Gate()

    @shadow(candidate=gate, max_concurrency=1, max_queue=2, sinks=[])
    def predict(x: int) -> int:
        return x

    assert predict(0) == 0
    assert gate.wait_entered()
    assert [predict(i) for i in range(1, 11)] == list(range(1, 11))
    stats = predict.shadow.stats()
    assert (stats.sampled, dict(stats.dropped), stats.in_flight) == (11, {"queue_full": 8}, 3)
    gate.release.set()
    stats = settle(predict.shadow)
    assert (stats.emitted, dict(stats.dropped)) == (3, {"queue_full": 8})


@pytest.mark.parametrize("mode", MODES)
def test_live_raises(mode: str) -> None:
    """When live raises, the caller gets that very exception and the arms' errors compare."""
    error = ValueError("live failed")
    memory = sinks.Memory()

    def live(x: int) -> int:
        raise error

    def candidate(x: int) -> int:
        raise ValueError("live failed")

    target = build("function", mode, live, candidate, sinks=[memory])
    with pytest.raises(ValueError) as caught:
        target(1)
    assert caught.value is error
    stats = settle(target.experiment)
    (result,) = memory.results
    assert result.live.error == ("ValueError", "live failed")
    assert result.match is True
    assert (stats.emitted, stats.matched, stats.candidate_errors) == (1, 1, 1)


def test_candidate_calls_the_decorated_function() -> None:
    """A candidate that calls its own live function (a fallback) does not shadow that call again."""
    calls = {"n": 0}
    memory = sinks.Memory()

    def candidate(x: int) -> int:
        calls["n"] += 1
        if calls["n"] > 200:  # bound the cascade this test is about, so the suite goes on
            return x
        return predict(x) + 1

    @shadow(candidate=candidate, max_concurrency=1, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, calls["n"]) == (1, 1, 1)
    assert memory.results[0].candidate.value == 2


def test_candidate_raises_an_exception_that_cannot_be_printed() -> None:
    """An exception whose str() raises is still recorded with its type."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    def candidate(data: Any) -> Any:
        raise Unprintable

    results, stats = run_fault("sync", candidate)
    error_type = f"{__name__}.{Unprintable.__qualname__}"
    assert_one_candidate_error(results, stats, error_type)
    assert "unprintable" in results[0].candidate.error[1]


def test_user_executor_is_shut_down() -> None:
    """A user executor that was shut down drops its samples as shutdown; live carries on."""
    pool = ThreadPoolExecutor(1)
    pool.shutdown()

    @shadow(candidate=lambda x: x, executor=pool, sinks=[])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(3)] == [0, 1, 2]
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, dict(stats.dropped)) == (3, 0, {"shutdown": 3})


def test_experiment_disabled_while_calls_are_in_flight() -> None:
    """Turning an experiment off mid-flight lets pending shadows finish and samples no more."""
    gate = Gate()
    memory = sinks.Memory()

    @shadow(candidate=gate, max_concurrency=1, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert [predict(i) for i in range(3)] == [0, 1, 2]
    assert gate.wait_entered()
    predict.shadow.enabled = False
    assert [predict(i) for i in range(3, 6)] == [3, 4, 5]
    gate.release.set()
    stats = settle(predict.shadow)
    assert (stats.sampled, stats.emitted, stats.skipped) == (3, 3, 0)
    assert len(memory) == 3
