"""Comparators: decide whether a candidate's output matches the live one.

    >>> import operator
    >>> from shadowdeco import compare
    >>> nan = float("nan")
    >>> compare.equal({"p": nan, "tags": ("a", "b")}, {"p": float("nan"), "tags": ["a", "b"]})
    True
    >>> compare.close(rel=0.01)(100.0, 100.5)
    True
    >>> compare.by(operator.itemgetter("label"))({"label": 1, "p": 0.9}, {"label": 1, "p": 0.7})
    True
    >>> compare.ignore("meta.request_id")({"y": 1, "meta": {"request_id": 7}}, {"y": 1, "meta": {}})
    True

A comparator is any callable ``(live, candidate) -> bool | float``. A ``bool`` says match or
mismatch; a ``float`` is a score, which the caller records as such. Plain functions are fine;
the classes here carry settings and print readably.

``equal`` is the default. It is deep equality with the rules model outputs need:

* NaN equals NaN (Python floats and complex parts, numpy scalars and arrays; NaT in numpy
  date arrays too).
* ``dict`` (any ``Mapping``): same keys, equal values. ``list`` and ``tuple`` are one family:
  ``[1, 2]`` equals ``(1, 2)``, because a JSON round trip turns tuples into lists. ``set`` and
  ``frozenset`` use ``==`` (so NaN inside a set is only equal to the very same NaN object).
* numpy arrays, only when numpy is already imported (it is never imported here): same shape, then
  ``array_equal`` (NaN-aware for float and complex dtypes). An array against a list or tuple
  compares with ``numpy.asarray`` of the sequence. Object arrays compare element by element with
  these same rules. numpy scalars compare as the Python values they hold.
* Anything else uses ``==``; an exception in ``==`` (or in ``bool()`` of an array-like answer)
  means "not equal", never an error. ``True == 1`` follows Python: equal.
* A reference cycle, or nesting deeper than 100 containers, is "not equal", never a
  ``RecursionError``.

Exceptions raised by user code given to ``by`` (the projection) or as ``compare=`` propagate: they
are bugs in the experiment, which the caller reports, not mismatches.
"""

from __future__ import annotations

import cmath
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any, Protocol, cast

__all__ = [
    "By",
    "Close",
    "Comparator",
    "Ignore",
    "by",
    "close",
    "coerce",
    "equal",
    "errors_equal",
    "ignore",
]

#: Containers nested deeper than this compare as "not equal" instead of exhausting the stack.
MAX_DEPTH = 100

# numpy dtype kinds compared as numbers: bool, signed, unsigned, float, complex.
_NUMERIC_KINDS = "biufc"


class Comparator(Protocol):
    """Anything called as ``compare(live, candidate)`` that returns a match (bool) or a score."""

    def __call__(self, live: Any, candidate: Any, /) -> bool | float: ...


# ---------------------------------------------------------------------------------------------
# The deep comparison shared by ``equal`` and ``close``.


def _safe_eq(a: Any, b: Any) -> bool:
    """Python ``==`` where raising, or an answer without a truth value, means not equal."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a user's __eq__ may raise anything: that is a mismatch
        return False


def _is_nan(x: Any) -> bool:
    try:
        return bool(x != x)  # noqa: PLR0124 - only NaN is unequal to itself, in every number type
    except Exception:  # noqa: BLE001 - e.g. a signalling Decimal NaN refuses to compare
        return False


def _is_number(x: Any) -> bool:
    # bool is tested first: mypy holds that no bool is a numbers.Number (Python disagrees).
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


def _numbers_equal(a: Any, b: Any) -> bool:
    if isinstance(a, complex) or isinstance(b, complex):
        # Part by part, so that nan+1j is not taken for nan+2j.
        return _numbers_equal(a.real, b.real) and _numbers_equal(a.imag, b.imag)
    a_nan, b_nan = _is_nan(a), _is_nan(b)
    if a_nan or b_nan:
        return a_nan and b_nan
    return _safe_eq(a, b)


def _numbers_close(a: Any, b: Any, rel: float, abs_: float) -> bool:
    try:
        if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
            a_nan, b_nan = _is_nan(a), _is_nan(b)
            if a_nan or b_nan:
                return a_nan and b_nan
            return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
        ca, cb = complex(a), complex(b)
        nan_parts = (math.isnan(ca.real), math.isnan(ca.imag))
        if any(nan_parts) or math.isnan(cb.real) or math.isnan(cb.imag):
            # NaN must sit in the same parts; the other parts are compared on their own.
            if nan_parts != (math.isnan(cb.real), math.isnan(cb.imag)):
                return False
            return (nan_parts[0] or math.isclose(ca.real, cb.real, rel_tol=rel, abs_tol=abs_)) and (
                nan_parts[1] or math.isclose(ca.imag, cb.imag, rel_tol=rel, abs_tol=abs_)
            )
        return cmath.isclose(ca, cb, rel_tol=rel, abs_tol=abs_)
    except (TypeError, ValueError, ArithmeticError):
        # Ints too large for a float, Decimals that refuse conversion: exact rules decide.
        return _numbers_equal(a, b)


class _Comparison:
    """One deep comparison: the rules (exact or within a tolerance) and the cycle guard."""

    __slots__ = ("active", "np", "tol")

    def __init__(self, tol: tuple[float, float] | None) -> None:
        self.tol = tol
        # An ndarray can only exist if numpy was imported, so looking it up here is enough to
        # recognise arrays; numpy itself is never imported by this module.
        self.np: ModuleType | None = sys.modules.get("numpy")
        # (id(live part), id(candidate part)) pairs being compared further up the stack.
        self.active: set[tuple[int, int]] = set()

    def same(self, a: Any, b: Any, depth: int) -> bool:
        np = self.np
        if np is not None:
            ndarray = getattr(np, "ndarray", None)
            if ndarray is not None and (isinstance(a, ndarray) or isinstance(b, ndarray)):
                return self._arrays(np, a, b, depth)
            generic = getattr(np, "generic", ())
            if isinstance(a, generic):
                a = _item(a)
            if isinstance(b, generic):
                b = _item(b)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            return self._nested(a, b, depth, self._mappings)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return self._nested(a, b, depth, self._sequences)
        if _is_number(a) and _is_number(b):
            if self.tol is None:
                return _numbers_equal(a, b)
            return _numbers_close(a, b, *self.tol)
        return _safe_eq(a, b)

    def _nested(self, a: Any, b: Any, depth: int, compare: Callable[[Any, Any, int], bool]) -> bool:
        if depth >= MAX_DEPTH:
            return False
        key = (id(a), id(b))
        if key in self.active:  # a reference cycle: never equal, and never endless
            return False
        self.active.add(key)
        try:
            return compare(a, b, depth + 1)
        finally:
            self.active.discard(key)

    def _mappings(self, a: Mapping[Any, Any], b: Mapping[Any, Any], depth: int) -> bool:
        if len(a) != len(b) or not _safe_eq(a.keys(), b.keys()):
            return False
        return all(self.same(value, b[key], depth) for key, value in a.items())

    def _sequences(self, a: list[Any] | tuple[Any, ...], b: Any, depth: int) -> bool:
        return len(a) == len(b) and all(self.same(x, y, depth) for x, y in zip(a, b, strict=True))

    def _arrays(self, np: ModuleType, a: Any, b: Any, depth: int) -> bool:
        try:
            a, b = _as_array(np, a), _as_array(np, b)
            if a is None or b is None or a.shape != b.shape:
                return False
            kind_a, kind_b = a.dtype.kind, b.dtype.kind
            if kind_a == "O" or kind_b == "O":
                return self._nested(a, b, depth, self._elements)
            if (kind_a in _NUMERIC_KINDS) != (kind_b in _NUMERIC_KINDS):
                return False  # numbers against strings or dates: numpy would only warn
            if (
                self.tol is not None
                and kind_a in _NUMERIC_KINDS[1:]
                and kind_b in _NUMERIC_KINDS[1:]
            ):
                rel, abs_ = self.tol
                return bool(np.allclose(a, b, rtol=rel, atol=abs_, equal_nan=True))
            # NaN (and NaT, for dates) equals itself; isnan is undefined for strings and others.
            equal_nan = kind_a in "fc" or kind_b in "fc" or (kind_a in "mM" and kind_b in "mM")
            return bool(np.array_equal(a, b, equal_nan=equal_nan))
        except Exception:  # noqa: BLE001 - ragged lists, odd dtypes: numpy's refusal is a mismatch
            return False

    def _elements(self, a: Any, b: Any, depth: int) -> bool:
        return all(self.same(x, y, depth) for x, y in zip(a.flat, b.flat, strict=True))


def _item(scalar: Any) -> Any:
    try:
        return scalar.item()
    except Exception:  # noqa: BLE001 - keep the numpy scalar; == still applies
        return scalar


def _as_array(np: ModuleType, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple, int, float, complex, np.generic)):
        return np.asarray(value)  # a number: a 0-d array, equal to one holding it
    return None


def _compare(live: Any, candidate: Any, tol: tuple[float, float] | None) -> bool:
    try:
        return _Comparison(tol).same(live, candidate, 0)
    except RecursionError:
        # Called with the stack already nearly full: still an answer, not a crash.
        return False


_SCALARS = frozenset({int, str, bytes, bool, type(None)})


def equal(live: Any, candidate: Any) -> bool:
    """Deep equality where NaN equals NaN and a list equals a tuple of equal items."""
    # Fast paths for the common model outputs (a label, a number): the full walk below
    # costs microseconds per call in the background.
    cls = type(live)
    if cls is type(candidate):
        if cls in _SCALARS:
            return bool(live == candidate)
        if cls is float:
            return bool(live == candidate) or (math.isnan(live) and math.isnan(candidate))
    return _compare(live, candidate, None)


# ---------------------------------------------------------------------------------------------
# Comparators with settings.


def _name(obj: object) -> str:
    if isinstance(obj, (FunctionType, BuiltinFunctionType)):
        return obj.__qualname__
    return repr(obj)


def _tolerance(name: str, value: object) -> float:
    message = f"{name} must be a finite number >= 0, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(message)
    return number


class Close:
    """Like ``equal``, but numbers match within ``rel`` (relative) or ``abs`` (absolute)."""

    __slots__ = ("abs", "rel")

    def __init__(self, *, rel: float = 1e-9, abs: float = 0.0) -> None:
        self.rel = _tolerance("rel", rel)
        self.abs = _tolerance("abs", abs)

    def __call__(self, live: Any, candidate: Any) -> bool:
        return _compare(live, candidate, (self.rel, self.abs))

    def __repr__(self) -> str:
        return f"close(rel={self.rel!r}, abs={self.abs!r})"


def close(*, rel: float = 1e-9, abs: float = 0.0) -> Close:
    """Compare like ``equal``, numbers within a tolerance.

    Python numbers (not bools) match when ``math.isclose(a, b, rel_tol=rel, abs_tol=abs)``, also
    inside containers; numpy numeric arrays when ``numpy.allclose(a, b, rtol=rel, atol=abs,
    equal_nan=True)``, which is numpy's asymmetric test ``|a - b| <= abs + rel * |b|``. NaN matches
    NaN. ``rel`` and ``abs`` must be finite numbers >= 0.
    """
    return Close(rel=rel, abs=abs)


class By:
    """Compare ``projection(live)`` with ``projection(candidate)``."""

    __slots__ = ("compare", "projection")

    def __init__(self, projection: Callable[[Any], Any], compare: Comparator | None = None) -> None:
        if not callable(projection):
            raise TypeError(f"projection must be a callable, got {projection!r}")
        self.projection = projection
        self.compare = coerce(compare)

    def __call__(self, live: Any, candidate: Any) -> bool | float:
        return self.compare(self.projection(live), self.projection(candidate))

    def __repr__(self) -> str:
        extra = "" if self.compare is equal else f", compare={_name(self.compare)}"
        return f"by({_name(self.projection)}{extra})"


def by(projection: Callable[[Any], Any], compare: Comparator | None = None) -> By:
    """Compare one projection of each output, e.g. ``by(operator.itemgetter("label"))``.

    ``compare`` (default ``equal``) compares the two projections.
    """
    return By(projection, compare)


def _parse_path(path: object) -> tuple[str, ...]:
    if not isinstance(path, str):
        raise TypeError(f"paths must be non-empty strings, got {path!r}")
    parts = tuple(path.split("."))
    if not all(parts):
        raise ValueError(f"paths must be non-empty dot-separated keys, got {path!r}")
    return parts


def _index_last(parts: tuple[str, ...]) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, -int(part)) if part.isdecimal() else (1, part) for part in parts)


def _drop(value: Any, parts: tuple[str, ...]) -> Any:
    """``value`` without ``parts``: a new container where something is dropped, else ``value``.

    Only the containers along the path are copied, so the inputs are never mutated and values
    that cannot be copied (locks, handles, huge arrays) never need to be.
    """
    if isinstance(value, Mapping):
        return _drop_from_mapping(value, parts)
    if isinstance(value, (list, tuple)) and parts[0] == "*":
        rest = parts[1:]
        if not rest:
            return [] if isinstance(value, list) else ()
        items = [_drop(item, rest) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (list, tuple)) and parts[0].isdecimal():  # an item, by its index
        index, rest = int(parts[0]), parts[1:]
        if index >= len(value):
            return value
        items = list(value)
        if rest:
            child = _drop(items[index], rest)
            if child is items[index]:
                return value
            items[index] = child
        else:
            del items[index]
        return items if isinstance(value, list) else tuple(items)
    return value  # a path that does not exist is simply not there to ignore


def _drop_from_mapping(value: Mapping[Any, Any], parts: tuple[str, ...]) -> Any:
    head, rest = parts[0], parts[1:]
    if head == "*":
        keys = list(value)
    elif head in value:
        keys = [head]
    elif head.isdecimal() and int(head) in value:  # an int key, as JSON paths name them
        keys = [int(head)]
    else:
        return value
    result = dict(value)
    if not rest:
        for key in keys:
            del result[key]
        return result
    changed = False
    for key in keys:
        child = _drop(value[key], rest)
        if child is not value[key]:
            result[key] = child
            changed = True
    return result if changed else value


class Ignore:
    """Compare dict/JSON-like outputs with some paths removed from both sides first."""

    __slots__ = ("_parts", "compare", "paths")

    def __init__(self, *paths: str, compare: Comparator | None = None) -> None:
        if not paths:
            raise ValueError("paths must name at least one path, got ()")
        # Higher list indices first: deleting item 0 before item 1 would shift item 2 into
        # its place (and make the result depend on the order the paths were given in).
        self._parts = tuple(sorted((_parse_path(path) for path in paths), key=_index_last))
        self.paths = paths
        self.compare = coerce(compare)

    def __call__(self, live: Any, candidate: Any) -> bool | float:
        for parts in self._parts:
            live = _drop(live, parts)
            candidate = _drop(candidate, parts)
        return self.compare(live, candidate)

    def __repr__(self) -> str:
        args = [repr(path) for path in self.paths]
        if self.compare is not equal:
            args.append(f"compare={_name(self.compare)}")
        return f"ignore({', '.join(args)})"


def ignore(*paths: str, compare: Comparator | None = None) -> Ignore:
    """Compare with ``paths`` removed from (copies of) both outputs, then ``compare`` them.

    A path is dot-separated keys; ``*`` matches every key of a dict or every item of a list or
    tuple, and digits name an item of a list or tuple by its index (or an int key of a dict):
    ``"meta.request_id"``, ``"items.*.timestamp"``, ``"items.0.id"``, ``"*.trace"``. A path
    that does not exist is simply skipped. Keys containing dots, and a literal ``*`` key,
    cannot be named.
    """
    return Ignore(*paths, compare=compare)


# ---------------------------------------------------------------------------------------------
# Helpers for the engine.


def coerce(value: object, *, param: str = "compare") -> Comparator:
    """The comparator for a ``compare=`` option: ``None`` is ``equal``, a callable is itself."""
    if value is None:
        return equal
    if callable(value):
        return cast("Comparator", value)
    raise TypeError(f"{param} must be a callable (live, candidate) -> bool | float, got {value!r}")


def errors_equal(
    live_error: tuple[str, str] | None, candidate_error: tuple[str, str] | None
) -> bool:
    """Whether two errors, each ``(type name, message)`` or ``None``, are the same error."""
    if live_error is None or candidate_error is None:
        return live_error is None and candidate_error is None
    return tuple(live_error) == tuple(candidate_error)
