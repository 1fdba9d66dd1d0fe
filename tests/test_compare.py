"""Specification of shadowdeco.compare: the comparators that decide match or mismatch."""

from __future__ import annotations

import copy
import doctest
import json
import math
import operator
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowdeco import compare
from shadowdeco.compare import (
    By,
    Close,
    Ignore,
    by,
    close,
    coerce,
    equal,
    errors_equal,
    ignore,
)

NAN = float("nan")

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


class NoTruth:
    def __bool__(self) -> bool:
        raise ValueError("truth value is ambiguous")


class ArrayLikeEq:
    def __eq__(self, other: object) -> NoTruth:  # type: ignore[override]
        return NoTruth()

    __hash__ = object.__hash__


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- equal -------------------------------------------------------------------------------------


def test_module_docstring_example_runs() -> None:
    """The example that opens the module docstring runs as written."""
    assert doctest.testmod(compare).failed == 0


def test_all_is_sorted() -> None:
    """``__all__`` is sorted and names only what the module defines."""
    assert compare.__all__ == sorted(compare.__all__)
    assert all(hasattr(compare, name) for name in compare.__all__)


def test_nan_equals_nan_at_top_level() -> None:
    """Two NaN floats are equal, though ``==`` says otherwise."""
    assert equal(NAN, float("nan"))
    assert not equal(NAN, 0.0)
    assert not equal(1.0, NAN)


def test_nan_equals_nan_nested() -> None:
    """NaN equals NaN inside dicts, lists and tuples too."""
    assert equal({"p": [1.0, NAN], "q": (NAN,)}, {"p": [1.0, float("nan")], "q": (float("nan"),)})
    assert not equal({"p": [1.0, NAN]}, {"p": [1.0, 2.0]})


def test_complex_nan_compares_part_by_part() -> None:
    """A complex NaN equals another only when NaN sits in the same part and the rest is equal."""
    assert equal(complex(NAN, 1.0), complex(NAN, 1.0))
    assert not equal(complex(NAN, 1.0), complex(NAN, 2.0))
    assert not equal(complex(NAN, 1.0), complex(1.0, NAN))
    assert equal(complex(2.0, 0.0), 2)


@pytest.mark.parametrize(
    ("live", "candidate", "expected"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1}, {"b": 1}, False),
        ({"a": {"b": {"c": [1, {"d": 2}]}}}, {"a": {"b": {"c": [1, {"d": 2}]}}}, True),
        ({"a": {"b": {"c": [1, {"d": 2}]}}}, {"a": {"b": {"c": [1, {"d": 3}]}}}, False),
        ([1, 2, 3], [1, 2], False),
        ([1, [2, 3]], [1, [3, 2]], False),
        ({1, 2, 3}, {3, 2, 1}, True),
        ({1, 2}, frozenset({1, 2}), True),
        ({1, 2}, {1, 3}, False),
        ({1, 2}, [1, 2], False),
        ("ab", ["a", "b"], False),
        ({"a": 1}, [("a", 1)], False),
        (1, 1.0, True),
        (True, 1, True),
        (0.1 + 0.2, 0.3, False),
        (None, None, True),
        (None, 0, False),
    ],
)
def test_nested_containers(live: Any, candidate: Any, expected: bool) -> None:
    """Dicts, lists, tuples and sets compare deeply; everything else follows ``==``."""
    assert equal(live, candidate) is expected
    assert equal(candidate, live) is expected


def test_list_equals_tuple_of_equal_items() -> None:
    """A list equals a tuple of equal items, as a JSON round trip would make it."""
    assert equal([1, (2, 3)], (1, [2, 3]))
    assert equal({"t": (1, 2)}, json.loads(json.dumps({"t": (1, 2)})))
    assert not equal([1, 2], (1, 2, 3))


def test_eq_that_raises_is_not_equal() -> None:
    """An object whose ``__eq__`` raises compares as not equal, and nothing is raised."""
    assert not equal(RaisingEq(), RaisingEq())
    assert not equal([1, RaisingEq()], [1, RaisingEq()])
    assert not equal(1, RaisingEq())


def test_eq_without_truth_value_is_not_equal() -> None:
    """An ``==`` answer whose truth value raises compares as not equal."""
    assert not equal(ArrayLikeEq(), ArrayLikeEq())


def test_self_referencing_list_is_not_equal() -> None:
    """A reference cycle compares as not equal instead of raising RecursionError."""
    loop: list[Any] = [1]
    loop.append(loop)
    other: list[Any] = [1]
    other.append(other)
    assert not equal(loop, loop)
    assert not equal(loop, other)
    assert not equal(loop, [1, [1, [1]]])


def test_self_referencing_dict_is_not_equal() -> None:
    """A dict that contains itself compares as not equal instead of raising RecursionError."""
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert not equal(loop, loop)


def test_nesting_limit() -> None:
    """Nesting up to 100 containers compares normally; deeper compares as not equal."""
    assert equal(nested(compare.MAX_DEPTH), nested(compare.MAX_DEPTH))
    assert not equal(nested(compare.MAX_DEPTH + 1), nested(compare.MAX_DEPTH + 1))
    assert not equal(nested(10_000), nested(10_000))


def test_module_works_without_numpy() -> None:
    """The module never imports numpy and compares everything else without it."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(Path(compare.__file__))!r})\n"
        "c = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(c)\n"
        "assert c.equal([float('nan'), {'a': (1,)}], [float('nan'), {'a': [1]}])\n"
        "assert c.close(rel=0.1)([1.0], [1.05])\n"
        "assert 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- equal with numpy --------------------------------------------------------------------------


def test_numpy_arrays_equal() -> None:
    """Arrays with the same shape and values are equal."""
    np = pytest.importorskip("numpy")
    assert equal(np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3))
    assert not equal(np.arange(6), np.arange(1, 7))


def test_a_zero_d_array_equals_the_number_it_holds() -> None:
    np = pytest.importorskip("numpy")
    assert equal(np.array(5.0), 5.0)
    assert equal(7, np.array(7))
    assert equal(np.array(float("nan")), float("nan"))
    assert not equal(np.array(5.0), 6.0)
    assert not equal(np.array([5.0]), 5.0)  # a shape (1,) array is not a number


def test_numpy_arrays_of_different_shapes_differ() -> None:
    """Arrays of different shapes are not equal, even where numpy would broadcast."""
    np = pytest.importorskip("numpy")
    assert not equal(np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2))
    assert not equal(np.zeros(3), np.zeros((1, 3)))
    assert not equal(np.zeros(3), np.zeros(1))


def test_numpy_int_and_float_dtypes_compare_by_value() -> None:
    """An int array equals a float array holding the same values."""
    np = pytest.importorskip("numpy")
    assert equal(np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]))
    assert not equal(np.array([1, 2, 3]), np.array([1.0, 2.0, 3.5]))


def test_numpy_nan_in_arrays() -> None:
    """NaN equals NaN in float and complex arrays, and NaT in date arrays."""
    np = pytest.importorskip("numpy")
    assert equal(np.array([1.0, np.nan]), np.array([1.0, np.nan]))
    assert not equal(np.array([1.0, np.nan]), np.array([np.nan, 1.0]))
    assert equal(np.array([1j, complex(np.nan, 0)]), np.array([1j, complex(np.nan, 0)]))
    dates = np.array(["2024-01-01", "NaT"], dtype="datetime64[D]")
    assert equal(dates, dates.copy())


def test_numpy_array_against_list() -> None:
    """An array compares with a list or tuple through ``numpy.asarray``."""
    np = pytest.importorskip("numpy")
    assert equal(np.array([[1.0, np.nan]]), [[1, float("nan")]])
    assert equal((1, 2), np.array([1, 2]))
    assert not equal(np.array([1, 2]), [1, 2, 3])
    assert not equal(np.array([1, 2]), [[1], [2, 3]])  # ragged: numpy refuses, not equal
    assert not equal(np.array([1, 2]), "12")
    assert not equal(np.array([1, 2]), np.array(["1", "2"]))


def test_numpy_arrays_nested_in_containers() -> None:
    """Arrays inside dicts and lists compare with the array rules."""
    np = pytest.importorskip("numpy")
    live = {"scores": np.array([0.5, np.nan]), "labels": [np.array([1, 2])]}
    candidate = {"scores": np.array([0.5, np.nan]), "labels": [np.array([1, 2])]}
    assert equal(live, candidate)
    candidate["labels"] = [np.array([1, 3])]
    assert not equal(live, candidate)


def test_numpy_object_arrays_compare_elementwise() -> None:
    """Object arrays compare element by element with the same rules, NaN included."""
    np = pytest.importorskip("numpy")
    live = np.array([{"a": float("nan")}, (1, 2)], dtype=object)
    candidate = np.array([{"a": float("nan")}, [1, 2]], dtype=object)
    assert equal(live, candidate)
    candidate[1] = [1, 3]
    assert not equal(live, candidate)


def test_numpy_scalars_compare_as_python_values() -> None:
    """numpy scalars compare as the Python values they hold, NaN included."""
    np = pytest.importorskip("numpy")
    assert equal(np.int64(3), 3)
    assert equal(np.float32(0.5), 0.5)
    assert equal([np.float64("nan")], [float("nan")])
    assert equal(np.float32("nan"), np.float64("nan"))
    assert equal(np.bool_(True), True)
    assert equal(np.str_("a"), "a")
    assert not equal(np.float32(0.1), 0.1)  # float32 holds a different number


# --- close -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "candidate", "rel", "abs_", "expected"),
    [
        (100.0, 100.5, 0.01, 0.0, True),
        (100.0, 102.0, 0.01, 0.0, False),
        (0.0, 1e-12, 1e-9, 0.0, False),
        (0.0, 1e-12, 1e-9, 1e-10, True),
        (1.0, 1.2, 0.0, 0.25, True),
        (1.0, 1.3, 0.0, 0.25, False),
        (1, 1.0000000001, 1e-9, 0.0, True),
        (NAN, NAN, 0.0, 0.0, True),
        (NAN, 1.0, 0.5, 1.0, False),
        (math.inf, math.inf, 1e-9, 0.0, True),
        (math.inf, -math.inf, 1e-9, 0.0, False),
        (1 + 1j, 1 + 1.001j, 0.01, 0.0, True),
        (complex(NAN, 1.0), complex(NAN, 1.001), 0.01, 0.0, True),
        (complex(NAN, 1.0), complex(1.0, NAN), 0.01, 0.0, False),
        (10**400, 10**400, 1e-9, 0.0, True),
        (True, 1, 0.5, 0.0, True),
        (True, 2, 0.5, 10.0, False),
        ({"p": [1.0, (2.0,)]}, {"p": (1.001, [2.001])}, 0.01, 0.0, True),
        ({"p": [1.0, (2.0,)]}, {"p": (1.001, [2.1])}, 0.01, 0.0, False),
        ({"label": "a", "p": 0.5}, {"label": "b", "p": 0.5}, 0.5, 1.0, False),
    ],
)
def test_close(live: Any, candidate: Any, rel: float, abs_: float, expected: bool) -> None:
    """Numbers match within the tolerances, also inside containers; bools compare exactly."""
    assert close(rel=rel, abs=abs_)(live, candidate) is expected


@pytest.mark.parametrize(
    ("live", "candidate", "rel", "abs_", "expected"),
    [
        ([1.0, 2.0], [1.001, 2.002], 0.01, 0.0, True),
        ([1.0, 2.0], [1.1, 2.0], 0.01, 0.0, False),
        ([1.0, float("nan")], [1.0, float("nan")], 0.0, 0.0, True),
        ([1, 2], [1.05, 2.0], 0.0, 0.1, True),
        ([[1.0, 2.0]], [1.0, 2.0], 0.5, 0.5, False),
        ([True, False], [True, False], 0.0, 0.0, True),
        ([True, False], [True, True], 1.0, 1.0, False),
    ],
)
def test_close_numpy_arrays(
    live: list[Any], candidate: list[Any], rel: float, abs_: float, expected: bool
) -> None:
    """Numeric arrays match through ``numpy.allclose`` once their shapes agree."""
    np = pytest.importorskip("numpy")
    compare_ = close(rel=rel, abs=abs_)
    assert compare_(np.array(live), np.array(candidate)) is expected
    assert compare_(np.array(live), candidate) is expected


def test_close_numpy_scalars() -> None:
    """numpy scalars match within the tolerances like Python numbers."""
    np = pytest.importorskip("numpy")
    assert close(rel=1e-6)(np.float32(0.1), 0.1)
    assert not close(rel=1e-9)(np.float32(0.1), 0.1)


def test_close_defaults_and_repr() -> None:
    """``close()`` defaults to rel=1e-9, abs=0.0 and prints like the call that made it."""
    default = close()
    assert isinstance(default, Close)
    assert (default.rel, default.abs) == (1e-9, 0.0)
    assert repr(close(rel=0.01)) == "close(rel=0.01, abs=0.0)"
    assert repr(close(rel=1, abs=2)) == "close(rel=1.0, abs=2.0)"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rel": -1}, ValueError, "rel must be a finite number >= 0, got -1"),
        ({"rel": float("nan")}, ValueError, "rel must be a finite number >= 0, got nan"),
        ({"abs": float("inf")}, ValueError, "abs must be a finite number >= 0, got inf"),
        ({"abs": -0.5}, ValueError, "abs must be a finite number >= 0, got -0.5"),
        ({"rel": "0.1"}, TypeError, "rel must be a finite number >= 0, got '0.1'"),
        ({"abs": None}, TypeError, "abs must be a finite number >= 0, got None"),
        ({"rel": True}, TypeError, "rel must be a finite number >= 0, got True"),
    ],
)
def test_close_validation(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """A bad tolerance fails at construction with a message naming the parameter and value."""
    with pytest.raises(error) as info:
        close(**kwargs)
    assert str(info.value) == message


# --- by ----------------------------------------------------------------------------------------


def test_by_itemgetter() -> None:
    """``by`` compares only the projected part of each output."""
    same_label = by(operator.itemgetter("label"))
    assert isinstance(same_label, By)
    assert same_label({"label": "cat", "p": 0.9}, {"label": "cat", "p": 0.6})
    assert not same_label({"label": "cat", "p": 0.9}, {"label": "dog", "p": 0.9})
    assert repr(same_label) == "by(operator.itemgetter('label'))"


def test_by_projection_uses_equal_rules() -> None:
    """The projections compare with ``equal`` by default, so NaN still equals NaN."""
    assert by(lambda r: r["p"])({"p": NAN, "x": 1}, {"p": NAN, "x": 2})


def test_by_custom_compare() -> None:
    """A custom comparator compares the projections, and its score passes through."""
    assert by(operator.itemgetter("p"), close(abs=0.1))({"p": 0.5}, {"p": 0.55})
    assert not by(operator.itemgetter("p"), close(abs=0.01))({"p": 0.5}, {"p": 0.55})

    def gap(live: float, candidate: float) -> float:
        return abs(live - candidate)

    score = by(operator.itemgetter("p"), gap)({"p": 0.5}, {"p": 0.75})
    assert score == 0.25
    assert repr(by(len, gap)) == "by(len, compare=test_by_custom_compare.<locals>.gap)"


def test_by_projection_errors_propagate() -> None:
    """An exception in the projection reaches the caller, which reports it."""
    with pytest.raises(KeyError):
        by(operator.itemgetter("missing"))({}, {})


def test_by_validation() -> None:
    """A non-callable projection or compare fails with a message naming the parameter."""
    with pytest.raises(TypeError, match=r"^projection must be a callable, got 'label'$"):
        by("label")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^compare must be a callable .*, got 3$"):
        by(len, 3)  # type: ignore[arg-type]


# --- ignore ------------------------------------------------------------------------------------


def test_ignore_dot_path() -> None:
    """A dotted path is removed from both sides before they are compared."""
    same = ignore("meta.request_id")
    assert isinstance(same, Ignore)
    live = {"y": 1, "meta": {"request_id": "a1", "model": "v1"}}
    assert same(live, {"y": 1, "meta": {"request_id": "b2", "model": "v1"}})
    assert not same(live, {"y": 1, "meta": {"request_id": "b2", "model": "v2"}})
    assert not same(live, {"y": 2, "meta": {"request_id": "a1", "model": "v1"}})


def test_ignore_star_over_dict_keys() -> None:
    """``*`` matches every key of a dict."""
    same = ignore("*.trace")
    live = {"a": {"v": 1, "trace": "x"}, "b": {"v": 2, "trace": "y"}, "c": 3}
    candidate = {"a": {"v": 1, "trace": "z"}, "b": {"v": 2}, "c": 3}
    assert same(live, candidate)
    assert not same(live, {**candidate, "c": 4})


def test_ignore_star_over_list_items() -> None:
    """``*`` matches every item of a list or tuple."""
    same = ignore("items.*.timestamp")
    live = {"items": [{"id": 1, "timestamp": 10}, {"id": 2, "timestamp": 11}]}
    candidate = {"items": ({"id": 1, "timestamp": 20}, {"id": 2, "timestamp": 21})}
    assert same(live, candidate)
    assert not same(live, {"items": [{"id": 1, "timestamp": 20}, {"id": 3}]})


def test_ignore_trailing_star_empties_the_container() -> None:
    """A trailing ``*`` ignores every key or item of the container it names."""
    assert ignore("debug.*")({"y": 1, "debug": {"a": 1}}, {"y": 1, "debug": {"b": 2, "c": 3}})
    assert ignore("log.*")({"log": [1, 2]}, {"log": (3,)})
    assert not ignore("log.*")({"log": [1, 2]}, {"log": {}})


def test_ignore_missing_paths() -> None:
    """A path that does not exist, or runs into a non-container, is simply skipped."""
    same = ignore("meta.request_id", "nothing.here", "y.deeper", "*.*.*")
    assert same({"y": 1}, {"y": 1})
    assert same({"y": 1, "meta": {"request_id": 1}}, {"y": 1, "meta": {}})
    assert not same({"y": 1, "meta": {"request_id": 1}}, {"y": 1})  # "meta" itself stays
    assert not same({"y": 1}, {"y": 2})
    assert ignore("a.b")([1, 2], [1, 2])
    assert ignore("a.b")(None, None)


def test_ignore_names_list_items_and_int_keys_by_number() -> None:
    """A path segment of digits names a list or tuple item, or an int key of a dict (a JSON
    path from a response, ``items.0.ts``); the item is left out of both sides alike."""
    assert ignore("items.0.ts")({"items": [{"ts": 1, "v": 2}]}, {"items": [{"ts": 2, "v": 2}]})
    assert not ignore("items.0.ts")({"items": [{"ts": 1, "v": 2}]}, {"items": [{"ts": 2, "v": 3}]})
    assert ignore("items.1")({"items": [1, "a", 3]}, {"items": (1, "b", 3)})
    assert not ignore("items.1")({"items": [1, "a", 3]}, {"items": [1, "b", 4]})
    assert ignore("items.9")({"items": [1]}, {"items": [1]})  # past the end: nothing to drop
    assert ignore("1")({1: "a", 2: "b"}, {1: "z", 2: "b"})
    assert ignore("1")({"1": "a"}, {"1": "z"})  # a str key of digits stays a str key


def test_ignore_does_not_mutate_inputs() -> None:
    """The inputs keep every key: only copies have the paths removed."""
    live = {"meta": {"id": 1, "keep": [1]}, "items": [{"ts": 1, "v": 2}], "t": ({"ts": 1},)}
    candidate = {"meta": {"id": 2, "keep": [1]}, "items": [{"ts": 3, "v": 2}], "t": ({"ts": 2},)}
    before = (copy.deepcopy(live), copy.deepcopy(candidate))
    assert ignore("meta.id", "items.*.ts", "t.*.ts", "meta.keep.*")(live, candidate)
    assert (live, candidate) == before


def test_ignore_with_custom_compare() -> None:
    """The pruned outputs are compared with the given comparator."""
    same = ignore("id", compare=close(abs=0.1))
    assert same({"id": 1, "p": 0.5}, {"id": 2, "p": 0.55})
    assert not same({"id": 1, "p": 0.5}, {"id": 2, "p": 0.7})
    assert repr(same) == "ignore('id', compare=close(rel=1e-09, abs=0.1))"
    assert repr(ignore("meta.id", "*.trace")) == "ignore('meta.id', '*.trace')"


@pytest.mark.parametrize(
    ("paths", "error", "message"),
    [
        ((), ValueError, r"^paths must name at least one path, got \(\)$"),
        (("",), ValueError, r"^paths must be non-empty dot-separated keys, got ''$"),
        (("a..b",), ValueError, r"^paths must be non-empty dot-separated keys, got 'a\.\.b'$"),
        (("a", 3), TypeError, r"^paths must be non-empty strings, got 3$"),
        ((None,), TypeError, r"^paths must be non-empty strings, got None$"),
    ],
)
def test_ignore_validation(paths: tuple[Any, ...], error: type[Exception], message: str) -> None:
    """Bad paths fail at construction with a message naming ``paths`` and the value."""
    with pytest.raises(error, match=message):
        ignore(*paths)


def test_ignore_validates_compare() -> None:
    """A non-callable compare fails with a message naming ``compare``."""
    with pytest.raises(TypeError, match=r"^compare must be a callable"):
        ignore("a", compare="equal")  # type: ignore[arg-type]


# --- coerce and errors_equal -------------------------------------------------------------------


def test_coerce_none_is_equal() -> None:
    """``None`` means the default comparator, ``equal``."""
    assert coerce(None) is equal


def test_coerce_callable_is_itself() -> None:
    """A callable is used as it is."""

    def scorer(live: Any, candidate: Any) -> float:
        return 0.5

    assert coerce(scorer) is scorer
    comparator = close()
    assert coerce(comparator) is comparator


@pytest.mark.parametrize("value", [1, "equal", [equal]])
def test_coerce_rejects_non_callables(value: object) -> None:
    """Anything else is a TypeError naming the parameter and the value."""
    with pytest.raises(TypeError) as info:
        coerce(value, param="compare_with")
    assert str(info.value) == (
        f"compare_with must be a callable (live, candidate) -> bool | float, got {value!r}"
    )


@pytest.mark.parametrize(
    ("live_error", "candidate_error", "expected"),
    [
        (None, None, True),
        (("ValueError", "bad"), ("ValueError", "bad"), True),
        (("ValueError", "bad"), ("ValueError", "worse"), False),
        (("ValueError", "bad"), ("TypeError", "bad"), False),
        (("ValueError", "bad"), None, False),
        (None, ("ValueError", "bad"), False),
        (("ValueError", "bad"), ["ValueError", "bad"], True),
    ],
)
def test_errors_equal(live_error: Any, candidate_error: Any, expected: bool) -> None:
    """Errors are the same when their type names and messages are; a JSON list counts too."""
    assert errors_equal(live_error, candidate_error) is expected


# --- properties --------------------------------------------------------------------------------


@given(json_like)
def test_equal_is_reflexive(value: Any) -> None:
    """Every JSON-like value, NaN included, equals itself."""
    assert equal(value, value)


@given(json_like)
def test_equal_to_a_deep_copy(value: Any) -> None:
    """Every JSON-like value equals a deep copy of itself."""
    assert equal(value, copy.deepcopy(value))


@given(json_like)
def test_equal_survives_a_json_round_trip(value: Any) -> None:
    """A JSON round trip (tuples become lists) keeps a value equal to the original."""
    assert equal(value, json.loads(json.dumps(value)))


@given(json_like)
def test_close_is_reflexive(value: Any) -> None:
    """``close()`` finds every JSON-like value close to itself and to a deep copy."""
    assert close()(value, value)
    assert close(rel=0.0)(value, copy.deepcopy(value))
