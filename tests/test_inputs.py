"""I5 Inputs: the candidate sees the inputs as they were when the live call began."""

from __future__ import annotations

import copy
import json
import logging
import threading
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


class Basket:
    """A mutable object of the user's own type."""

    def __init__(self, owner: str, items: list[str]) -> None:
        self.owner = owner
        self.items = items


@pytest.mark.parametrize("copy_inputs", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["function", "method"])
def test_recorded_inputs_are_a_snapshot_the_candidate_cannot_change(
    kind: str, mode: str, copy_inputs: bool
) -> None:
    """record_inputs keeps a private deep copy of the original objects, taken before the
    candidate runs: what the candidate does to its arguments (its own copy, or with
    copy_inputs=False the caller's objects) does not reach the record."""
    memory = sinks.Memory()

    def candidate(basket: Basket, *, tags: dict[str, list[str]]) -> int:
        basket.owner = "mallory"
        basket.items.append("candidate")
        tags["seen"].append("candidate")
        tags.clear()
        return len(basket.items)

    def live(basket: Basket, *, tags: dict[str, list[str]]) -> int:
        return len(basket.items)

    target = build(
        kind, mode, live, candidate, record_inputs=True, copy_inputs=copy_inputs, sinks=[memory]
    )
    basket, tags = Basket("ann", ["apple"]), {"seen": ["live"]}
    assert target(basket, tags=tags) == 1
    assert target.experiment.flush(10)
    (result,) = memory.results
    assert result.candidate.value == 2
    recorded = result.inputs["args"][0]  # the instance of a method is not an input
    assert len(result.inputs["args"]) == 1
    assert isinstance(recorded, Basket)  # the original type, for the serializer to meet
    assert recorded is not basket
    assert (recorded.owner, recorded.items) == ("ann", ["apple"])
    assert result.inputs["kwargs"] == {"tags": {"seen": ["live"]}}
    assert result.to_dict()["inputs"]["kwargs"] == {"tags": {"seen": ["live"]}}
    if copy_inputs:  # the candidate changed its own copy only
        assert (basket.owner, basket.items, tags) == ("ann", ["apple"], {"seen": ["live"]})


class NoDeepCopy:
    """An argument that will not deep-copy (but converts)."""

    def __init__(self, email: str, error: type[BaseException]) -> None:
        self.email = email
        self.error = error

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise self.error("no deep copy")

    def to_dict(self) -> dict[str, str]:
        return {"email": self.email}


class Hopeless(NoDeepCopy):
    """Will not deep-copy, and to_jsonable fails on it too."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name}")


def test_an_argument_that_will_not_deep_copy_is_recorded_converted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An argument whose deep copy raises (anything, SystemExit too; a lock) is recorded
    converted by to_jsonable at capture, with a warning once; the others are still recorded
    as copies of the originals, and the result is emitted."""
    memory = sinks.Memory()
    seen: list[Any] = []

    @shadow(
        candidate=lambda *args, **kwargs: seen.append(args) or "v2",
        record_inputs=True,
        copy_inputs=False,  # else the call is not shadowed at all (a copy_failed drop)
        sinks=[memory],
    )
    def predict(*args: Any, **kwargs: Any) -> str:
        return "v1"

    lock = threading.Lock()
    exit_on_copy = NoDeepCopy("ann@example.com", SystemExit)
    basket = Basket("bob", ["pear"])
    with caplog.at_level(logging.WARNING, logger="shadowdeco"):
        for _ in range(2):
            assert predict(lock, exit_on_copy, basket, odd=Hopeless("x", TypeError)) == "v1"
        assert predict.shadow.flush(10)
    stats = predict.shadow.stats()
    assert (stats.emitted, stats.dropped_total, stats.candidate_errors) == (2, 0, 0)
    assert len(seen) == 2
    for result in memory.results:
        assert result.candidate.value == "v2"
        args, kwargs = result.inputs["args"], result.inputs["kwargs"]
        assert args[0]["$type"] == "_thread.lock"
        assert args[1] == {"email": "ann@example.com"}  # converted: no longer a NoDeepCopy
        assert isinstance(args[2], Basket)
        assert args[2] is not basket
        assert kwargs["odd"]["$type"].endswith("Hopeless")
        assert "RuntimeError" in kwargs["odd"]["$error"]
        data = result.to_dict()["inputs"]
        assert data["args"][:2] == [args[0], {"email": "ann@example.com"}]
        assert data["args"][2] == {"$type": f"{__name__}.Basket", "$repr": repr(args[2])}
        json.dumps(result.to_dict())
    warnings = [r.getMessage() for r in caplog.records if "deep-cop" in r.getMessage()]
    assert len(warnings) == 3  # once per type, not per call
    assert any("NoDeepCopy" in w for w in warnings)


def test_key_is_recorded_on_the_result() -> None:
    """key= is computed from the call's arguments and recorded."""
    memory = sinks.Memory()

    @shadow(candidate=lambda user, x: x, key=lambda user, x: user["id"], sinks=[memory])
    def predict(user: dict[str, str], x: int) -> int:
        return x

    predict({"id": "u-42"}, 1)
    predict.shadow.flush(10)
    assert memory.results[0].key == "u-42"
