"""The paired result: one live and one candidate observation, and its v1 JSON shape.

>>> obs = Observation(status="ok", value=1, error=None, duration=0.002)
>>> result = ShadowResult(experiment="demo", id="r1", started_at=0.0, key=None,
...                       live=obs, candidate=obs, queue_s=0.0, match=True)
>>> result.to_dict()["v"]
1

Every sink and the report share the dict that :meth:`ShadowResult.to_dict` returns.  Values
JSON cannot hold go through a serializer (:func:`to_jsonable` by default), which converts what it
knows and spells out the rest as ``{"$type": ..., "$repr": ...}``: nothing is dropped silently.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import fractions
import json
import math
import pathlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["SCHEMA_VERSION", "Observation", "Serializer", "ShadowResult", "to_jsonable"]

SCHEMA_VERSION = 1

Status = Literal["ok", "error", "timeout"]
Serializer = Callable[[Any], Any]

# Ints longer than this are written in hexadecimal: Python refuses to write more than 4,300
# decimal digits (sys.set_int_max_str_digits), which is about 14,284 bits.
_INT_BITS = 14_000
_INT_LIMIT = 1 << _INT_BITS
_INT_FLOOR = -_INT_LIMIT

# Past this depth a value is spelled out with repr() instead of walked: a guard against
# self-referencing structures, which would otherwise recurse without end.
_MAX_DEPTH = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """What one arm did: its value or its error, how long it took, and how it ended."""

    status: Status
    value: Any = None
    #: ``(type qualified name, message)`` when the arm raised, else None.
    error: tuple[str, str] | None = None
    #: seconds, measured in whole nanoseconds with ``time.perf_counter_ns()``.
    duration: float | None = None

    def to_dict(self, serializer: Serializer | None = None) -> dict[str, Any]:
        return {
            "status": self.status,
            "value": _serialize(self.value, serializer),
            "error": None
            if self.error is None
            else _serialize(_error_dict(self.error), serializer),
            "duration_s": self.duration,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowResult:
    """One sampled call: the live and the candidate observation side by side."""

    experiment: str
    id: str
    #: Unix time (seconds) at which the live call began.
    started_at: float
    key: Any
    live: Observation
    candidate: Observation
    #: seconds the candidate waited in the queue before it ran.
    queue_s: float | None
    #: True / False, or None when not comparable (timeout, comparator error, score only).
    match: bool | None
    score: float | None = None
    #: ``{"args": [...], "kwargs": {...}}`` when the experiment has ``record_inputs=True``:
    #: deep copies of the arguments, of their own types (converted by the serializer in
    #: :meth:`to_dict`, like values); for the middleware, the request summary dict.
    inputs: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None
    trace_id: str | None = None
    span_id: str | None = None
    #: whether the live span's trace was sampled (None: not traced).  Not in ``to_dict()``:
    #: the OpenTelemetry sink gives the result span the same sampling decision.
    trace_sampled: bool | None = None

    def to_dict(self, serializer: Serializer | None = None) -> dict[str, Any]:
        """The versioned JSON-ready shape (``"v": 1``) shared by every sink and the report."""
        return {
            "v": SCHEMA_VERSION,
            "experiment": self.experiment,
            "id": self.id,
            "started_at": iso_utc(self.started_at),
            "key": _serialize(self.key, serializer),
            "live": self.live.to_dict(serializer),
            "candidate": self.candidate.to_dict(serializer),
            "queue_s": self.queue_s,
            "match": self.match,
            "score": _finite_or_str(self.score) if self.score is not None else None,
            "inputs": None if self.inputs is None else _serialize(dict(self.inputs), serializer),
            "context": None if self.context is None else _serialize(dict(self.context), serializer),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    def to_json(self, serializer: Serializer | None = None) -> str:
        """:meth:`to_dict` as compact JSON text (UTF-8 ready, no NaN), for sinks that write
        lines or messages: the same text as ``json.dumps(result.to_dict(),
        separators=(",", ":"), ensure_ascii=False, allow_nan=False)``, several times faster.

        Raises what ``json.dumps`` would (``ValueError``, ``TypeError``) when the serializer
        returns something JSON cannot hold.
        """
        live, cand = self.live, self.candidate
        return (
            f'{{"v":{SCHEMA_VERSION},"experiment":{_json_str(self.experiment)},'
            f'"id":{_json_str(self.id)},"started_at":"{iso_utc(self.started_at)}",'
            f'"key":{_json_value(self.key, serializer)},'
            f'"live":{_json_observation(live, serializer)},'
            f'"candidate":{_json_observation(cand, serializer)},'
            f'"queue_s":{_json_number(self.queue_s)},"match":{_json_plain(self.match)},'
            f'"score":{_json_score(self.score)},'
            f'"inputs":{_json_mapping(self.inputs, serializer)},'
            f'"context":{_json_mapping(self.context, serializer)},'
            f'"trace_id":{_json_plain(self.trace_id)},"span_id":{_json_plain(self.span_id)}}}'
        )


# --------------------------------------------------------------------------------------------
# JSON text without the intermediate dict: ShadowResult.to_json()

# The pieces json.dumps(..., separators=(",", ":"), ensure_ascii=False, allow_nan=False) is
# made of, so that to_json() writes the very same text: the C string escaper, int and float
# repr, and one reusable encoder for nested values.
_json_str: Callable[[str], str] = json.encoder.encode_basestring
_json_any = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_LITERALS: dict[Any, str] = {None: "null", True: "true", False: "false"}


def _json_plain(value: Any) -> str:
    """A field to_dict() passes through as it is (None, a bool, a string)."""
    if value is None or value is True or value is False:
        return _LITERALS[value]
    if type(value) is str:
        return _json_str(value)
    return _json_any(value)


def _json_number(value: Any) -> str:
    """A duration: a float, or None."""
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _json_plain(value)


def _json_score(value: Any) -> str:
    if value is None:
        return "null"
    return _json_plain(_finite_or_str(value))


def _json_value(value: Any, serializer: Serializer | None) -> str:
    """A user value: through the serializer, as to_dict() does, with the common plain types
    written directly when the serializer is the default one (which returns them unchanged)."""
    if serializer is None and default_serializer[0] is to_jsonable:
        cls = type(value)
        if cls is str:
            return _json_str(value)
        if cls is int and _INT_FLOOR < value < _INT_LIMIT:  # else as to_jsonable writes it
            return int.__repr__(value)
        if cls is float:
            converted = _finite_or_str(value)
            return _json_str(converted) if type(converted) is str else float.__repr__(value)
        if value is None or cls is bool:
            return _LITERALS[value]
    return _json_any(_serialize(value, serializer))


def _json_mapping(value: Mapping[str, Any] | None, serializer: Serializer | None) -> str:
    if value is None:
        return "null"
    return _json_any(_serialize(dict(value), serializer))


def _json_observation(obs: Observation, serializer: Serializer | None) -> str:
    error = obs.error
    if error is None:
        error_text = "null"
    elif serializer is None and default_serializer[0] is to_jsonable:  # returns it unchanged
        error_text = f'{{"type":{_json_plain(error[0])},"message":{_json_plain(error[1])}}}'
    else:
        error_text = _json_any(_serialize(_error_dict(error), serializer))
    return (
        f'{{"status":{_json_plain(obs.status)},"value":{_json_value(obs.value, serializer)},'
        f'"error":{error_text},"duration_s":{_json_number(obs.duration)}}}'
    )


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso_utc(timestamp: float) -> str:
    """``datetime.fromtimestamp(timestamp, timezone.utc).isoformat()``, at a fifth of the cost:
    the text of the second is kept, and only the microseconds are formatted per call."""
    global _second
    # Rounded as datetime rounds (half to even, to the microsecond), carrying into the second.
    fraction, whole = math.modf(timestamp)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    second, text = _second
    if second != whole:
        second = int(whole)
        text = _dt.datetime.fromtimestamp(second, tz=_dt.timezone.utc).isoformat()[:-6]
        _second = (second, text)  # one tuple store: threads see the old pair or the new one
    return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"


def _fast_init(cls: type[Any]) -> Callable[..., Any]:
    """A positional constructor for one of the frozen classes above, for shadowdeco's own use.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; setting
    the slots directly builds the same object in about a third of the time, which counts when
    a result is built for every sampled call.  Every field must be passed, in order.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"set_{name}": getattr(cls, name).__set__ for name in names})
    body = "".join(f"    set_{name}(obj, {name})\n" for name in names)
    # Generated, as dataclasses generate __init__: a loop over the fields costs as much as
    # the frozen __init__ it replaces.
    source = f"def make({', '.join(names)}):\n    obj = new(cls)\n{body}    return obj\n"
    exec(source, namespace)  # noqa: S102 - the source is built from field names above
    make: Callable[..., Any] = namespace["make"]
    return make


#: ``observation(status, value, error, duration)`` and ``result(experiment, id, ...every
#: field in order)``: the fast constructors the runner uses.
observation_of: Callable[[Status, Any, tuple[str, str] | None, float | None], Observation]
observation_of = _fast_init(Observation)
result_of: Callable[..., ShadowResult] = _fast_init(ShadowResult)


def error_of(exc: BaseException) -> tuple[str, str]:
    """The ``(type, message)`` pair by which errors are recorded and compared."""
    cls = type(exc)
    module = cls.__module__
    if module == "__mp_main__":  # the main script, as a spawned worker process imports it
        module = "__main__"
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the error itself
        message = f"<unprintable {cls.__qualname__}>"
    return name, message


def _error_dict(error: tuple[str, str]) -> dict[str, str]:
    """An arm's error as the JSON shape holds it, and as the serializer meets it: a redacting
    serializer reaches the message (``KeyError(user_email)`` puts the address there)."""
    return {"type": error[0], "message": error[1]}


def _serialize(value: Any, serializer: Serializer | None) -> Any:
    convert = serializer or default_serializer[0]
    try:
        return convert(value)
    except Exception as exc:  # noqa: BLE001 - a serializer bug must not lose the result
        kind, message = error_of(exc)
        return {"$type": type_name(value), "$error": f"{kind}: {message}"}


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Turn ``value`` into something ``json.dumps`` accepts, losing as little as possible.

    Known types are converted (numpy arrays and scalars, dataclasses, datetimes, bytes,
    sets, Decimal, UUID, Enum, paths, non-finite floats as the strings ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``, ints of more than ~4,200 digits as ``{"$int": hex}``, a
    mapping whose keys are equal as text as ``{"$pairs": [[key, value], ...]}``); anything
    else becomes ``{"$type": ..., "$repr": ...}``.
    Pass your own callable as ``serializer`` (to :func:`shadowdeco.configure` or to
    ``to_dict``) to redact or convert differently; it may call this one for the rest.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Past a few thousand digits Python will not write an int as decimal text (and the
        # JSON line would be lost): hexadecimal has no such limit.
        return value if _INT_FLOOR < value < _INT_LIMIT else {"$int": hex(value)}
    if isinstance(value, float):
        return _finite_or_str(value)
    if _depth > _MAX_DEPTH:
        return _spelled_out(value)
    depth = _depth + 1
    # The plain containers first, by exact type: the ABC checks below cost about a
    # microsecond each, for every nested value (headers as lists of pairs, for one).
    cls = type(value)
    if cls is dict:
        return _mapping(value, depth)
    if cls is list or cls is tuple:
        return [to_jsonable(v, depth) for v in value]
    if cls in _OBJECT_TYPES:
        return _from_object(value, depth)
    if isinstance(value, Mapping):
        return _mapping(value, depth)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, depth) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, depth) for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed types do not sort; keep them in iteration order
            return items
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, depth)
    if isinstance(value, (decimal.Decimal, fractions.Fraction, uuid.UUID, pathlib.PurePath)):
        return str(value)
    if isinstance(value, complex):
        return [_finite_or_str(value.real), _finite_or_str(value.imag)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name), depth) for f in dataclasses.fields(value)
        }
    if len(_OBJECT_TYPES) < 1024:  # bounded, for types made on the fly
        _OBJECT_TYPES.add(cls)
    return _from_object(value, depth)


# Types found to be none of the kinds to_jsonable() checks by type: their values go straight to
# _from_object().  The checks cost ~4 µs a value (ABCs, dataclasses), and a mirrored request
# records three such objects (the request and both responses).
_OBJECT_TYPES: set[type] = set()
# The dump method that served a type last time, tried first for its next value: each method
# looked for and missing costs an AttributeError raised and cleared.
_DUMP_OF: dict[type, str] = {}
_DUMPS = ("model_dump", "to_dict", "_asdict")


def _from_object(value: Any, depth: int) -> Any:
    """An object of no known kind: numpy-like, a dump method, or its type and repr."""
    known = _DUMP_OF.get(type(value))
    if known is not None:
        dump = getattr(value, known, None)
        if callable(dump):
            return _dumped(value, dump, depth)
    # numpy (and anything shaped like it) without importing numpy: arrays have tolist(),
    # scalars have item().
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and hasattr(value, "dtype"):
        return to_jsonable(tolist(), depth)
    item = getattr(value, "item", None)
    if callable(item) and hasattr(value, "dtype"):
        return to_jsonable(item(), depth)
    # pydantic models and similar objects that know their own dict form
    for method in _DUMPS:
        dump = getattr(value, method, None)
        if callable(dump):
            if len(_DUMP_OF) < 1024:
                _DUMP_OF[type(value)] = method
            return _dumped(value, dump, depth)
    return _spelled_out(value)


def _spelled_out(value: Any) -> dict[str, str]:
    """What to_jsonable() makes of a value it cannot convert: its type and repr."""
    return {"$type": type_name(value), "$repr": _safe_repr(value)}


def _dumped(value: Any, dump: Callable[[], Any], depth: int) -> Any:
    try:
        return to_jsonable(dump(), depth)
    except Exception:  # noqa: BLE001 - a broken dump method: fall back to repr
        return _spelled_out(value)


#: The serializer ``to_dict()`` uses when none is passed; ``shadowdeco.configure(serializer=...)``
#: replaces it process-wide.  A one-item list so the swap is a single atomic store.
default_serializer: list[Serializer] = [to_jsonable]


def _finite_or_str(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    out = {_key(k): to_jsonable(v, depth) for k, v in value.items()}
    if len(out) == len(value):
        return out
    # Keys equal as text ({1: "a", "1": "b"}): one would overwrite the other, so every pair
    # is kept, as a pair.
    return {"$pairs": [[to_jsonable(k, depth), to_jsonable(v, depth)] for k, v in value.items()]}


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(to_jsonable(key))


def type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_repr(value: Any, limit: int = 1000) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ still leaves the type on record
        return f"<unrepresentable {type_name(value)}>"
    return text if len(text) <= limit else text[:limit] + "…"
