"""I2 Isolation: nothing on the shadow side changes, reaches or blocks the live path."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from helpers import KINDS, MODES, assert_adds_up, build

from shadowdeco import _runner, shadow, sinks


class CandidateBoom(Exception):
    pass


class Hostile(BaseException):
    """A BaseException subclass that is not an Exception."""


def raise_exception(*args: Any) -> Any:
    raise CandidateBoom("candidate failed")


def raise_keyboard_interrupt(*args: Any) -> Any:
    raise KeyboardInterrupt


def raise_system_exit(*args: Any) -> Any:
    raise SystemExit(3)


def raise_base_exception(*args: Any) -> Any:
    raise Hostile("hostile")


def recurse_forever(*args: Any) -> Any:
    return recurse_forever(*args)


def return_unserializable(*args: Any) -> Any:
    return threading.Lock()


def mutate_arguments(data: Any) -> Any:
    data["items"].append("from candidate")
    data.clear()
    return None


HOSTILE = {
    "exception": (raise_exception, "test_isolation.CandidateBoom"),
    "keyboard_interrupt": (raise_keyboard_interrupt, "KeyboardInterrupt"),
    "system_exit": (raise_system_exit, "SystemExit"),
    "base_exception": (raise_base_exception, "test_isolation.Hostile"),
    "recursion": (recurse_forever, "RecursionError"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_candidate_errors_never_reach_the_caller(kind: str, mode: str, name: str) -> None:
    """Whatever the candidate raises stays in its own thread and is recorded."""
    candidate, error_type = HOSTILE[name]
    memory = sinks.Memory()
    target = build(kind, mode, lambda data: "live", candidate, sinks=[memory])
    assert target({"items": []}) == "live"
    assert target.experiment.flush(10)
    (result,) = memory.results
    assert result.candidate.status == "error"
    assert result.candidate.error is not None
    assert result.candidate.error[0] == error_type
    assert result.match is False
    stats = target.experiment.stats()
    assert stats.candidate_errors == 1
    assert_adds_up(stats)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_candidate_mutations_are_invisible_to_live(kind: str, mode: str) -> None:
    """The candidate mutates its copy; the caller's object is untouched."""
    seen: list[Any] = []

    def live(data: Any) -> str:
        seen.append(repr(data))
        return "live"

    target = build(kind, mode, live, mutate_arguments, sinks=[])
    data = {"items": [1, 2]}
    assert target(data) == "live"
    target.experiment.flush(10)
    assert data == {"items": [1, 2]}
    assert seen == ["{'items': [1, 2]}"]


@pytest.mark.parametrize("mode", MODES)
def test_unserializable_values_are_recorded_not_lost(mode: str) -> None:
    """A value JSON cannot hold is spelled out in to_dict(), not dropped."""
    memory = sinks.Memory()
    target = build("function", mode, lambda x: 1, return_unserializable, sinks=[memory])
    target(1)
    target.experiment.flush(10)
    (result,) = memory.results
    value = result.to_dict()["candidate"]["value"]
    assert value["$type"] == "_thread.lock"
    assert "$repr" in value


def test_comparator_errors_are_counted_and_the_result_still_goes_out() -> None:
    """A raising comparator leaves match unknown, counts the error, emits the result."""
    memory = sinks.Memory()

    def broken(live: Any, candidate: Any) -> bool:
        raise ValueError("comparator bug")

    @shadow(candidate=lambda x: x, compare=broken, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(3) == 3
    predict.shadow.flush(10)
    (result,) = memory.results
    assert result.match is None
    stats = predict.shadow.stats()
    assert (stats.compare_errors, stats.emitted) == (1, 1)


def test_failures_are_logged_at_most_once_a_minute_and_all_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A comparator failing on every call is one ERROR record a minute (the next one says
    how many were not shown); stats() counts every failure."""
    clock = [1000.0]
    monkeypatch.setattr(_runner.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(_runner, "_failures", {})

    def broken(live: Any, candidate: Any) -> bool:
        raise ValueError("comparator bug")

    predict = shadow(candidate=abs, compare=broken, sinks=[], name="rate-limited")(abs)
    with caplog.at_level(logging.ERROR, logger="shadowdeco"):
        for i in range(10):
            predict(i)
        assert predict.shadow.flush(10)
        clock[0] += 61  # a minute later
        predict(10)
        assert predict.shadow.flush(10)
    records = [r.getMessage() for r in caplog.records if "rate-limited" in r.getMessage()]
    assert len(records) == 2
    assert "9 more like it" in records[1]
    assert predict.shadow.stats().compare_errors == 11


def test_a_raising_sink_does_not_stop_the_next_sink() -> None:
    """Sink errors are counted; the other sinks still get every result."""
    memory = sinks.Memory()

    def broken(result: Any) -> None:
        raise OSError("disk full")

    @shadow(candidate=lambda x: x, sinks=[broken, memory])
    def predict(x: int) -> int:
        return x

    for i in range(20):
        assert predict(i) == i
    predict.shadow.flush(10)
    assert len(memory) == 20
    stats = predict.shadow.stats()
    assert (stats.sink_errors, stats.emitted) == (20, 20)
    assert_adds_up(stats)


def test_a_raising_sampler_skips_the_call() -> None:
    """A sampler that raises leaves the call unsampled and counts the error."""

    def sampler(x: int) -> bool:
        raise RuntimeError("sampler bug")

    @shadow(candidate=lambda x: x, sample=sampler, sinks=[])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    stats = predict.shadow.stats()
    assert (stats.sampled, stats.skipped, stats.sampler_errors) == (0, 1, 1)


class Halt(BaseException):
    """A BaseException that is not KeyboardInterrupt: user code may raise one."""


def test_a_sampler_or_copier_raising_a_base_exception_never_reaches_the_caller() -> None:
    """The live path runs the user's sampler and input copier: whatever they raise (short of
    a Ctrl-C) is counted, and the caller gets its live result."""

    def sampler(x: int) -> bool:
        raise Halt

    def copier(value: Any) -> Any:
        raise Halt

    @shadow(candidate=lambda x: x, sample=sampler, sinks=[])
    def sampled(x: int) -> int:
        return x

    @shadow(candidate=lambda x: x, copy_inputs=copier, sinks=[])
    def copied(x: list[int]) -> int:
        return 7

    assert sampled(1) == 1
    assert copied([1]) == 7
    assert sampled.shadow.stats().sampler_errors == 1
    assert dict(copied.shadow.stats().dropped) == {"copy_failed": 1}
    assert_adds_up(copied.shadow.stats())


def test_key_and_context_errors_are_recorded_as_none() -> None:
    """key= and context= callables that raise leave those fields None."""
    memory = sinks.Memory()

    def bad(*args: Any) -> Any:
        raise KeyError("nope")

    @shadow(candidate=lambda x: x, key=bad, context=bad, sinks=[memory])
    def predict(x: int) -> int:
        return x

    assert predict(1) == 1
    predict.shadow.flush(10)
    (result,) = memory.results
    assert (result.key, result.context) == (None, None)


def test_uncopyable_inputs_are_dropped_and_counted() -> None:
    """An argument deepcopy cannot copy serves live and is dropped as copy_failed."""

    class Uncopyable:
        def __deepcopy__(self, memo: Any) -> Any:
            raise TypeError("no copies")

    @shadow(candidate=lambda x: x, sinks=[])
    def predict(x: Any) -> str:
        return "live"

    assert predict(Uncopyable()) == "live"
    stats = predict.shadow.stats()
    assert dict(stats.dropped) == {"copy_failed": 1}
    assert_adds_up(stats)


def test_missing_candidate_method_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A missing candidate method is recorded at each call and logged once."""
    memory = sinks.Memory()

    class Model:
        @shadow(candidate="does_not_exist", sinks=[memory])
        def predict(self, x: int) -> int:
            return x

    assert Model().predict(4) == 4
    assert Model().predict(5) == 5
    Model.predict.shadow.flush(10)
    first = memory.results[0]
    assert first.candidate.status == "error"
    assert first.candidate.error == (
        "AttributeError",
        "candidate method 'does_not_exist' not found on Model",
    )
    assert Model.predict.shadow.stats().candidate_errors == 2
    warnings = [r for r in caplog.records if "does_not_exist" in r.getMessage()]
    assert len(warnings) == 1


def test_candidate_returning_a_coroutine_is_awaited_in_the_background() -> None:
    """A sync live function with an async candidate gets the awaited value."""
    memory = sinks.Memory()

    async def candidate(x: int) -> int:
        return x + 1

    @shadow(candidate=candidate, sinks=[memory])
    def predict(x: int) -> int:
        return x + 1

    assert predict(1) == 2
    predict.shadow.flush(10)
    (result,) = memory.results
    assert (result.candidate.status, result.candidate.value, result.match) == ("ok", 2, True)


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, Hostile])
def test_a_sink_raising_base_exceptions_does_not_stop_emission(error: type[BaseException]) -> None:
    """A sink raising SystemExit (or any BaseException) is counted; later results still flow."""
    memory = sinks.Memory()

    def hostile(result: Any) -> None:
        raise error()

    @shadow(candidate=lambda x: x, sinks=[hostile, memory])
    def predict(x: int) -> int:
        return x

    for i in range(3):
        assert predict(i) == i
        assert predict.shadow.flush(10)
    assert len(memory) == 3
    assert predict.shadow.stats().sink_errors == 3


def test_a_sampler_failing_on_every_call_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sampler raising on every call is counted every time but logged once, not per call."""

    def sampler(x: int) -> bool:
        raise KeyError("no user id")

    @shadow(candidate=lambda x: x, sample=sampler, name="noisy-sampler", sinks=[])
    def predict(x: int) -> int:
        return x

    with caplog.at_level("ERROR", logger="shadowdeco"):
        for i in range(100):
            assert predict(i) == i
    assert predict.shadow.stats().sampler_errors == 100
    assert len([r for r in caplog.records if "noisy-sampler" in r.getMessage()]) == 1
