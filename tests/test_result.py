"""The paired result and its versioned JSON shape."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shadowdeco
from shadowdeco import Observation, ShadowResult, shadow, sinks, to_jsonable


def make_result(**changes: Any) -> ShadowResult:
    ok = Observation("ok", 1, None, 0.001)
    base = ShadowResult(
        experiment="e",
        id="abc",
        started_at=0.0,
        key=None,
        live=ok,
        candidate=ok,
        queue_s=0.0,
        match=True,
    )
    return dataclasses.replace(base, **changes)


def test_results_are_frozen() -> None:
    """Results and observations cannot be changed once built."""
    result = make_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.match = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.live.value = 2  # type: ignore[misc]


def test_to_dict_is_the_v1_shape() -> None:
    """to_dict() gives every field of the versioned shape, JSON-ready."""
    error = Observation("error", None, ("ValueError", "bad"), 0.5)
    d = make_result(candidate=error, match=False, key="u1", context={"v": 2}).to_dict()
    assert d == {
        "v": 1,
        "experiment": "e",
        "id": "abc",
        "started_at": "1970-01-01T00:00:00+00:00",
        "key": "u1",
        "live": {"status": "ok", "value": 1, "error": None, "duration_s": 0.001},
        "candidate": {
            "status": "error",
            "value": None,
            "error": {"type": "ValueError", "message": "bad"},
            "duration_s": 0.5,
        },
        "queue_s": 0.0,
        "match": False,
        "score": None,
        "inputs": None,
        "context": {"v": 2},
        "trace_id": None,
        "span_id": None,
    }
    json.dumps(d, allow_nan=False)


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float
    y: float


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ((1, 2), [1, 2]),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"a"}), ["a"]),
        (b"\x00\xff", {"$bytes": "AP8="}),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "2026-01-02T03:04:05+00:00"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.timedelta(seconds=1.5), 1.5),
        (decimal.Decimal("1.10"), "1.10"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "red"),
        (Path("/srv/model.pkl"), "/srv/model.pkl"),
        (Point(1.0, 2.0), {"x": 1.0, "y": 2.0}),
        (1 + 2j, [1.0, 2.0]),
        ({1: "a"}, {"1": "a"}),
        ({"nested": [{"deep": {4, 5}}]}, {"nested": [{"deep": [4, 5]}]}),
        # keys equal as text: every pair kept, as pairs
        ({1: "a", "1": "b"}, {"$pairs": [[1, "a"], ["1", "b"]]}),
        # longer than Python writes as text (4,300 digits by default): hexadecimal
        pytest.param(1 << 20_000, {"$int": hex(1 << 20_000)}, id="int-20000-bits"),
        pytest.param(-(10**5000), {"$int": hex(-(10**5000))}, id="int-5001-digits"),
        pytest.param(10**4000, 10**4000, id="int-4001-digits"),
    ],
)
def test_to_jsonable_converts_what_json_cannot_hold(value: Any, expected: Any) -> None:
    """Known types are converted to JSON values."""
    assert to_jsonable(value) == expected
    json.dumps(to_jsonable(value), allow_nan=False)


def test_numpy_values_are_converted() -> None:
    """numpy arrays become lists and numpy scalars numbers."""
    np = pytest.importorskip("numpy")
    assert to_jsonable(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert to_jsonable(np.float32(0.5)) == 0.5
    assert to_jsonable(np.array([np.nan])) == ["NaN"]
    assert type(to_jsonable(np.int64(3))) is int


def test_an_object_type_is_looked_at_once_then_dumped_straight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects that convert through their own dump method (``to_dict``, ``model_dump``,
    ``_asdict``) or their repr are recognised by type after the first one: the chain of
    ABC and type checks (~4 µs, a few per mirrored request) runs once per type."""
    from shadowdeco import _result

    class Summary:
        def __init__(self, n: int) -> None:
            self.n = n

        def to_dict(self) -> dict[str, Any]:
            return {"n": self.n, "at": Path("/srv")}

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert to_jsonable(Summary(1)) == {"n": 1, "at": "/srv"}
    assert to_jsonable(Opaque())["$repr"] == "<opaque>"
    looked: list[Any] = []
    original = _result.dataclasses.is_dataclass
    monkeypatch.setattr(
        _result.dataclasses, "is_dataclass", lambda v: looked.append(v) or original(v)
    )
    assert [to_jsonable(Summary(n)) for n in (2, 3)] == [
        {"n": 2, "at": "/srv"},
        {"n": 3, "at": "/srv"},
    ]
    assert to_jsonable(Opaque())["$repr"] == "<opaque>"
    assert looked == []  # no type check ran again for either type
    assert to_jsonable(Point(1.0, 2.0)) == {"x": 1.0, "y": 2.0}  # other types still go through

    broken = Summary(4)
    broken.to_dict = lambda: 1 / 0  # type: ignore[method-assign]
    assert to_jsonable(broken)["$type"].endswith("Summary")  # a failing dump: type and repr
    gone = Summary(5)
    gone.to_dict = None  # type: ignore[assignment,method-assign]
    assert to_jsonable(gone)["$type"].endswith("Summary")  # the remembered method is not there


def test_unknown_objects_are_spelled_out_not_dropped() -> None:
    """An object of unknown type keeps its type and repr."""

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert to_jsonable(Opaque()) == {
        "$type": "test_result.test_unknown_objects_are_spelled_out_not_dropped.<locals>.Opaque",
        "$repr": "<opaque>",
    }


def test_broken_repr_and_cycles_do_not_break_serialization() -> None:
    """A raising __repr__ and a self-referencing list still serialize."""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert "unrepresentable" in to_jsonable(Broken())["$repr"]
    loop: list[Any] = []
    loop.append(loop)
    json.dumps(to_jsonable(loop))


def test_a_custom_serializer_can_redact() -> None:
    """configure(serializer=...) replaces the conversion, e.g. to redact values."""

    def redact(value: Any) -> Any:
        return "<redacted>" if isinstance(value, str) else to_jsonable(value)

    shadowdeco.configure(serializer=redact)
    d = make_result(live=Observation("ok", "secret", None, 0.1)).to_dict()
    assert d["live"]["value"] == "<redacted>"
    assert d["candidate"]["value"] == 1


EMAIL = re.compile(r"[\w.]+@[\w.]+")


def scrub(value: Any) -> Any:
    """A redacting serializer: every e-mail address in every string, at any depth."""
    value = to_jsonable(value)
    if isinstance(value, str):
        return EMAIL.sub("<email>", value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


@pytest.mark.parametrize("process_wide", [True, False], ids=["configure", "sink"])
def test_the_serializer_redacts_error_messages(process_wide: bool, tmp_path: Path) -> None:
    """Error messages go through the serializer as ``{"type", "message"}``, so personal data
    in ``str(exc)`` can be redacted like values; the line still says what was raised."""
    if process_wide:
        shadowdeco.configure(serializer=scrub)
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl", serializer=None if process_wide else scrub)

    def candidate(user: str) -> str:
        raise KeyError(f"no account for {user}")

    @shadow(candidate=candidate, sinks=[jsonl])
    def predict(user: str) -> str:
        raise LookupError(f"{user} is unknown")

    with pytest.raises(LookupError):
        predict("ann@example.com")
    assert predict.shadow.flush(10)
    line = (tmp_path / "r.jsonl").read_text()
    assert "ann@example.com" not in line
    record = json.loads(line)
    assert record["live"]["error"] == {"type": "LookupError", "message": "<email> is unknown"}
    message = "'no account for <email>'"  # str() of a KeyError quotes its argument
    assert record["candidate"]["error"] == {"type": "KeyError", "message": message}
    failed = make_result(candidate=Observation("error", None, ("KeyError", "x@y.z"), 0.1))
    assert json.loads(failed.to_json(scrub)) == failed.to_dict(scrub)
    assert failed.to_dict(scrub)["candidate"]["error"] == {"type": "KeyError", "message": "<email>"}


def test_the_serializer_meets_recorded_inputs_once(tmp_path: Path) -> None:
    """record_inputs keeps a snapshot of the arguments (the candidate may change them after);
    the serializer then runs once on them, as on every other field: one that is not
    idempotent (hashing for pseudonyms) gives the same pseudonym in inputs and values."""

    def pseudonym(value: Any) -> Any:
        value = to_jsonable(value)
        if isinstance(value, str):
            return "h:" + hashlib.sha256(value.encode()).hexdigest()[:8]
        if isinstance(value, dict):
            return {k: pseudonym(v) for k, v in value.items()}
        if isinstance(value, list):
            return [pseudonym(v) for v in value]
        return value

    shadowdeco.configure(serializer=pseudonym)
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl")

    @shadow(candidate=lambda who: who, record_inputs=True, sinks=[jsonl])
    def echo(who: str) -> str:
        return who

    echo("ann@example.com")
    assert echo.shadow.flush(10)
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["inputs"]["args"] == [record["live"]["value"]]
    assert record["live"]["value"] == pseudonym("ann@example.com")


class User:
    """A type a serializer redacts by type: its repr shows the address."""

    def __init__(self, email: str) -> None:
        self.email = email

    def __repr__(self) -> str:
        return f"User({self.email!r})"


def redact_users(value: Any) -> Any:
    """A serializer that redacts by type, at any depth, and converts the rest."""
    if isinstance(value, User):
        return "<redacted>"
    if isinstance(value, dict):
        return {str(k): redact_users(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_users(v) for v in value]
    return to_jsonable(value)


@pytest.mark.parametrize("process_wide", [True, False], ids=["configure", "sink"])
def test_a_serializer_redacts_recorded_inputs_by_type(process_wide: bool, tmp_path: Path) -> None:
    """Recorded inputs reach the serializer as the original objects, as values do: one that
    redacts a class by type reaches it in args and kwargs, nested in lists and dicts, through
    to_dict() and through a JsonLines file."""
    if process_wide:
        shadowdeco.configure(serializer=redact_users)
    path = tmp_path / "r.jsonl"
    memory = sinks.Memory()
    jsonl = sinks.JsonLines(path, serializer=None if process_wide else redact_users)

    @shadow(candidate=lambda *a, **k: "v2", record_inputs=True, sinks=[memory, jsonl])
    def predict(*args: Any, **kwargs: Any) -> str:
        return "v1"

    ann, bob = User("ann@example.com"), User("bob@example.com")
    predict(ann, [bob, 1], {"who": ann}, who=bob, many=[ann, {"u": bob}])
    assert predict.shadow.flush(10)
    expected = {
        "args": ["<redacted>", ["<redacted>", 1], {"who": "<redacted>"}],
        "kwargs": {"who": "<redacted>", "many": ["<redacted>", {"u": "<redacted>"}]},
    }
    (result,) = memory.results
    serializer = None if process_wide else redact_users
    assert result.to_dict(serializer)["inputs"] == expected
    assert json.loads(result.to_json(serializer))["inputs"] == expected
    line = path.read_text()
    assert json.loads(line)["inputs"] == expected
    assert "example.com" not in line


def test_a_non_idempotent_serializer_meets_each_recorded_input_once(tmp_path: Path) -> None:
    """A serializer that turns a type into a pseudonym (and would hash a pseudonym again) is
    called once per field per record, inputs included, and meets the original object there:
    the same user gets the same pseudonym in inputs, key and values."""
    calls: list[Any] = []

    def pseudonym(value: Any) -> Any:
        if isinstance(value, User):
            return "p:" + hashlib.sha256(value.email.encode()).hexdigest()[:8]
        if isinstance(value, str):  # a pseudonym met again would change: not idempotent
            return "s:" + hashlib.sha256(value.encode()).hexdigest()[:8]
        if isinstance(value, dict):
            return {str(k): pseudonym(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [pseudonym(v) for v in value]
        return to_jsonable(value)

    def counted(value: Any) -> Any:
        calls.append(value)
        return pseudonym(value)

    jsonl = sinks.JsonLines(tmp_path / "r.jsonl", serializer=counted)
    memory = sinks.Memory()

    @shadow(
        candidate=lambda user: user,
        key=lambda user: user,
        record_inputs=True,
        sinks=[memory, jsonl],
    )
    def echo(user: User) -> User:
        return user

    echo(User("ann@example.com"))
    assert echo.shadow.flush(10)
    record = json.loads((tmp_path / "r.jsonl").read_text())
    ann = pseudonym(User("ann@example.com"))
    assert record["inputs"] == {"args": [ann], "kwargs": {}}
    assert record["key"] == record["live"]["value"] == record["candidate"]["value"] == ann
    # key, each arm's value, inputs: four calls, the inputs met once, whole and unconverted
    assert len(calls) == 4
    (inputs,) = [c for c in calls if isinstance(c, dict) and "args" in c]
    assert isinstance(inputs["args"][0], User)
    calls.clear()
    assert memory.results[0].to_dict(counted) == record
    assert len(calls) == 4


def test_inputs_are_left_out_unless_asked(tmp_path: Path) -> None:
    """A default experiment records no inputs: not on the result, not in the line."""
    memory, jsonl = sinks.Memory(), sinks.JsonLines(tmp_path / "r.jsonl")

    @shadow(candidate=lambda row: row["id"], sinks=[memory, jsonl])
    def predict(row: dict[str, str]) -> str:
        return row["id"]

    predict({"id": "1", "email": "ann@example.com"})
    assert predict.shadow.flush(10)
    assert memory.results[0].inputs is None
    line = (tmp_path / "r.jsonl").read_text()
    assert json.loads(line)["inputs"] is None
    assert "ann@example.com" not in line


def test_to_json_writes_a_long_int_as_to_dict_does() -> None:
    """An int just past the hexadecimal threshold, but one Python could still write as
    decimal: the same shape from to_json's direct path as from to_dict."""
    value = 1 << 14_100
    result = make_result(candidate=Observation("ok", value, None, 0.1))
    assert json.loads(result.to_json()) == result.to_dict()
    assert result.to_dict()["candidate"]["value"] == {"$int": hex(value)}


def test_a_huge_int_loses_nothing_else_of_the_line(tmp_path: Path) -> None:
    """A value JSON text cannot hold as a number is converted; the rest of the line stays."""
    jsonl = sinks.JsonLines(tmp_path / "r.jsonl")

    @shadow(candidate=lambda: 1 << 20_000, sinks=[jsonl])
    def huge() -> int:
        return 1

    huge()
    assert huge.shadow.flush(10)
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["candidate"] == {
        "status": "ok",
        "value": {"$int": hex(1 << 20_000)},
        "error": None,
        "duration_s": record["candidate"]["duration_s"],
    }
    assert record["live"]["value"] == 1
    assert record["match"] is False


def test_a_raising_serializer_still_leaves_a_record() -> None:
    """A serializer that raises leaves the type and the error in place of the value."""

    def broken(value: Any) -> Any:
        raise ValueError("serializer bug")

    d = make_result().to_dict(serializer=broken)
    assert d["live"]["value"] == {"$type": "builtins.int", "$error": "ValueError: serializer bug"}


def test_emitted_results_carry_ids_times_and_durations() -> None:
    """Each emitted result has a unique id, a start time, both durations and a queue time."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x, sinks=[memory])
    def predict(x: int) -> int:
        return x

    for i in range(50):
        predict(i)
    predict.shadow.flush(10)
    results = memory.results
    assert len({r.id for r in results}) == 50
    for r in results:
        assert (r.live.duration or -1) >= 0
        assert (r.candidate.duration or -1) >= 0
        assert (r.queue_s or -1) >= 0
        assert abs(r.started_at - dt.datetime.now().timestamp()) < 3600


def _whole_nanoseconds(seconds: float | None) -> bool:
    """Written as whole nanoseconds: ``repr`` gives at most 9 decimals, not 17 digits of noise."""
    assert seconds is not None
    return seconds == round(seconds * 1e9) / 1e9


def test_durations_are_whole_nanoseconds() -> None:
    """Both durations and the queue time are counted in nanoseconds (perf_counter_ns), so the
    JSON holds 2.346e-06 rather than 2.3456789012345e-06: shorter lines, faster to write."""
    memory = sinks.Memory()

    def failing(x: int) -> int:
        raise ValueError(x)

    @shadow(candidate=lambda x: x, sinks=[memory], name="ok")
    def predict(x: int) -> int:
        return x

    @shadow(candidate=failing, sinks=[memory], name="raising")
    def predict2(x: int) -> int:
        return x

    async def acandidate(x: int) -> int:
        return x

    @shadow(candidate=acandidate, sinks=[memory], name="async")
    async def apredict(x: int) -> int:
        return x

    async def main() -> None:
        for i in range(20):
            await apredict(i)
        assert await apredict.shadow.aflush(10)

    for i in range(20):
        predict(i)
        predict2(i)
    asyncio.run(main())
    shadowdeco.flush(10)
    assert len(memory.results) == 60
    for r in memory.results:
        for seconds in (r.live.duration, r.candidate.duration, r.queue_s):
            assert _whole_nanoseconds(seconds), (r.experiment, seconds)


def test_a_float_comparator_gives_a_score() -> None:
    """A comparator returning a float records a score and leaves match unknown."""
    memory = sinks.Memory()

    @shadow(candidate=lambda x: x + 1, compare=lambda a, b: abs(a - b), sinks=[memory])
    def predict(x: float) -> float:
        return x

    predict(1.0)
    predict.shadow.flush(10)
    (result,) = memory.results
    assert (result.match, result.score) == (None, 1.0)


# --------------------------------------------------------------------------------------------
# to_json(): the text of json.dumps(to_dict()), written without the dict


def _dumps(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_floats = st.floats(allow_nan=True, allow_infinity=True)
_plain = st.none() | st.booleans() | st.integers() | _floats | st.text()
_values = st.recursive(
    _plain | st.binary(max_size=8) | st.sets(st.integers(), max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_errors = st.none() | st.tuples(st.text(), st.text())
_observations = st.builds(
    Observation,
    status=st.sampled_from(["ok", "error", "timeout"]),
    value=_values,
    error=_errors,
    duration=st.none() | st.floats(min_value=0, max_value=1e6),
)
_results = st.builds(
    ShadowResult,
    experiment=st.text(min_size=1),
    id=st.text(),
    started_at=st.floats(min_value=0, max_value=4e9),
    key=_values,
    live=_observations,
    candidate=_observations,
    queue_s=st.none() | st.floats(min_value=0, max_value=1e3),
    match=st.none() | st.booleans(),
    score=st.none() | _floats,
    inputs=st.none() | st.dictionaries(st.text(max_size=5), _values, max_size=3),
    context=st.none() | st.dictionaries(st.text(max_size=5), _values, max_size=3),
    trace_id=st.none() | st.text(),
    span_id=st.none() | st.text(),
)


@given(_results)
def test_to_json_is_the_text_of_to_dict(result: ShadowResult) -> None:
    """Byte for byte what json.dumps writes for to_dict(), whatever the values."""
    assert result.to_json() == _dumps(result.to_dict())


@given(_results)
def test_to_json_uses_a_custom_serializer_as_to_dict_does(result: ShadowResult) -> None:
    def redact(value: Any) -> Any:
        return "<redacted>" if isinstance(value, str) else to_jsonable(value)

    assert result.to_json(redact) == _dumps(result.to_dict(redact))


@given(st.floats(min_value=0, max_value=4e9) | st.integers(min_value=0, max_value=4_000_000_000))
def test_started_at_is_written_as_datetime_writes_it(timestamp: float) -> None:
    """The cached-second formatting rounds and carries as datetime does."""
    text = make_result(started_at=timestamp).to_dict()["started_at"]
    assert text == dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).isoformat()


@pytest.mark.parametrize("bad", [math.nan, object()])
def test_to_json_raises_what_json_dumps_raises(bad: Any) -> None:
    """A serializer returning what JSON cannot hold fails the same way in both."""
    result = make_result(key="k")
    with pytest.raises((ValueError, TypeError)) as direct:
        _dumps(result.to_dict(lambda v: bad))
    with pytest.raises(type(direct.value)):
        result.to_json(lambda v: bad)
