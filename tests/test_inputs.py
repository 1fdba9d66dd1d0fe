"""I5 Inputs: the candidate sees the inputs as they were when the live call began."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helpers import KINDS, MODES, build

import shadowdeco
from shadowdeco import shadow, sinks


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_candidate_sees_inputs_from_before_live_mutated_them(kind: str, mode: str) -> None:
    """Live mutating its argument does not change what the candidate receives."""
    memory = sinks.Memory()

    def live(data: dict[str, Any]) -> int:
        data["items"].append(99)
        return len(data["items"])

    target = build(kind, mode, live, lambda data: len(data["items"]), sinks=[memory])
    data = {"items": [1, 2]}
    assert target(data) == 3
    target.experiment.flush(10)
    (result,) = memory.results
    assert result.candidate.value == 2
    assert data == {"items": [1, 2, 99]}


def test_immutable_arguments_are_not_copied() -> None:
    """Strings, numbers and tuples of them reach the candidate as the very objects."""
    seen: list[Any] = []
    text = "x" * 1000
    pair = (1, "two", 3.0)

    @shadow(candidate=lambda *args: seen.extend(args), sinks=[])
    def predict(*args: Any) -> None:
        return None

    predict(text, pair, 10**30)
    predict.shadow.flush(10)
    assert seen[0] is text
    assert seen[1] is pair


def test_mutable_arguments_are_copied_only_when_sampled() -> None:
    """Deep copies happen on sampled calls only."""
    copies = 0

    class Counted:
        def __deepcopy__(self, memo: Any) -> Counted:
            nonlocal copies
            copies += 1
            return Counted()

    @shadow(candidate=lambda x: None, sample=0.0, sinks=[])
    def predict(x: Any) -> None:
        return None

    predict(Counted())
    assert copies == 0
    predict.shadow.sample = 1.0
    predict(Counted())
    assert copies == 1


def test_copy_inputs_false_shares_the_objects() -> None:
    """copy_inputs=False passes the caller's objects as they are."""
    seen: list[Any] = []
    data = {"a": 1}

    @shadow(candidate=seen.append, copy_inputs=False, sinks=[])
    def predict(x: Any) -> None:
        return None

    predict(data)
    predict.shadow.flush(10)
    assert seen[0] is data


def test_copy_inputs_callable_customises_the_copy() -> None:
    """A copy_inputs callable is applied to each mutable argument."""
    seen: list[Any] = []

    @shadow(candidate=lambda a, b: seen.append((a, b)), copy_inputs=copy.copy, sinks=[])
    def predict(a: Any, b: Any) -> None:
        return None

    inner = [1]
    predict([inner], 5)
    predict.shadow.flush(10)
    ((a, b),) = seen
    assert a == [inner]
    assert a[0] is inner  # a shallow copy
    assert b == 5


def test_adapt_gives_the_candidate_other_inputs() -> None:
    """adapt= returns one argument, or shadowdeco.Args for several and keywords."""
    memory = sinks.Memory()

    def v2(text: str, *, lang: str) -> str:
        return f"{lang}:{text}"

    @shadow(
        candidate=v2,
        adapt=lambda features: shadowdeco.Args(features["text"], lang="en"),
        sinks=[memory],
    )
    def predict(features: dict[str, str]) -> str:
        return "en:" + features["text"]

    @shadow(candidate=str.upper, adapt=lambda features: features["text"], sinks=[memory])
    def shout(features: dict[str, str]) -> str:
        return features["text"].upper()

    assert predict({"text": "hi"}) == "en:hi"
    assert shout({"text": "hi"}) == "HI"
    shadowdeco.flush(10)
    assert sorted((r.candidate.value, r.match) for r in memory.results) == [
        ("HI", True),
        ("en:hi", True),
    ]


def test_errors_of_both_arms_compare_by_type_and_message() -> None:
    """When live and candidate raise alike the pair matches; otherwise it does not."""
    memory = sinks.Memory()

    def fails(x: int) -> int:
        raise ValueError(f"bad {x}")

    def fails_differently(x: int) -> int:
        raise ValueError("other")

    live = shadow(candidate=fails, name="alike", sinks=[memory])(fails)
    other = shadow(candidate=fails_differently, name="unlike", sinks=[memory])(fails)
    for fn in (live, other):
        with pytest.raises(ValueError, match="bad 1"):
            fn(1)
    shadowdeco.flush(10)
    assert {r.experiment: r.match for r in memory.results} == {"alike": True, "unlike": False}


def test_record_inputs_keeps_the_snapshot() -> None:
    """record_inputs=True records the inputs as they were before live ran."""
    memory = sinks.Memory()

    @shadow(candidate=lambda d, n: None, record_inputs=True, sinks=[memory])
    def predict(d: dict[str, Any], n: int) -> None:
        d["added"] = True

    predict({"a": [1]}, n=2)
    predict.shadow.flush(10)
    (result,) = memory.results
    assert result.inputs == {"args": [{"a": [1]}], "kwargs": {"n": 2}}
    assert result.to_dict()["inputs"] == {"args": [{"a": [1]}], "kwargs": {"n": 2}}


def test_key_is_recorded_on_the_result() -> None:
    """key= is computed from the call's arguments and recorded."""
    memory = sinks.Memory()

    @shadow(candidate=lambda user, x: x, key=lambda user, x: user["id"], sinks=[memory])
    def predict(user: dict[str, str], x: int) -> int:
        return x

    predict({"id": "u-42"}, 1)
    predict.shadow.flush(10)
    assert memory.results[0].key == "u-42"
