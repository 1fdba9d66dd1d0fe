"""How recorded values become categories, numbers and join keys.

>>> category("churn"), category(1.0), category(None), category({"status": 503, "body_sha256": "…"})
('churn', '1', 'null', '503')
>>> key_text(42) == key_text("42") == key_text(42.0), key_text("42.0")
(True, '42.0')
>>> label_text("1.0"), label_text(" TRUE "), label_text("007")
('1', 'true', '007')

Outputs are counted, compared with labels and joined on as *text*: strings as they are, numbers
in their shortest form (``1.0`` and ``1`` are both ``"1"``), ``None`` as ``null``, booleans as
``true`` / ``false``, other JSON values in a canonical (sorted-keys) JSON spelling.  An HTTP
response recorded by the middleware (a dict with ``status`` and ``body_sha256``) counts as its
status code.

A CSV file has no types, so its cells go one step further (see :func:`from_text`): a CSV
label that spells a JSON number or a boolean is that value (``1.0`` matches a prediction ``1``,
``True`` matches ``true``), and a CSV key ``42.0`` also joins a result key ``42``.  Strings in
JSON (labels, keys, predictions) keep their type: ``"1.10"`` is not ``1.1``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Final

__all__ = [
    "category",
    "describe",
    "from_text",
    "is_http",
    "key_text",
    "label_text",
    "number",
    "parse_number",
    "type_name",
]

#: How the v1 shape spells the floats JSON cannot hold.
NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# Longer category texts are cut and tagged with a digest of the whole, so two long values that
# share a prefix still count as two.
_MAX_TEXT: Final = 120
#: The text of a value nested deeper than the JSON encoder goes (a few levels less than the
#: parser, so a line can parse and still hold one).
_TOO_DEEP: Final = "(nested too deeply)"
#: A number as JSON or a CSV writer spells it: ASCII digits without a leading zero (``007`` is
#: an id, not 7), an optional sign, fraction and exponent.  ``1_000``, ``nan`` and ``inf``,
#: which ``float()`` also takes, are not numbers here.
_NUMBER: Final = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_START: Final = frozenset("+-.0123456789")
_BOOLEANS: Final = {"true": True, "false": False}


def is_http(value: Any) -> bool:
    """True for the dict the middleware records for one HTTP response."""
    return isinstance(value, dict) and "status" in value and "body_sha256" in value


def category(value: Any) -> str:
    """The text a value is counted and compared as (see the module docstring)."""
    if isinstance(value, str):
        text = value
    elif value is None:
        return "null"
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    elif is_http(value):
        return category(value["status"])
    else:
        text = _canonical(value)
    if len(text) <= _MAX_TEXT:
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "backslashreplace"), digest_size=4).hexdigest()
    return f"{text[: _MAX_TEXT - 12]}…#{digest}"


def describe(value: Any) -> tuple[str, str, float | None]:
    """``(category(value), type_name(value), number(value))`` in one call.

    The report calls this for every output it reads, so the common JSON types take a fast path.
    """
    cls = type(value)
    if cls is str:
        text = value if len(value) <= _MAX_TEXT else category(value)
        x = NON_FINITE.get(value)
        return text, "str" if x is None else "float", x
    if cls is float:
        return (str(int(value)) if value.is_integer() else repr(value)), "float", value
    if cls is int:
        try:
            x = float(value)
        except OverflowError:  # an int past the float range still has a sign
            x = math.inf if value > 0 else -math.inf
        return category(value), "int", x
    return category(value), type_name(value), number(value)


def from_text(text: str) -> Any:
    """The JSON number or boolean that ``text`` spells, else ``text`` itself.

    >>> from_text("42"), from_text(" 1.0 "), from_text("-2.5e3"), from_text("False")
    (42, 1.0, -2500.0, False)
    >>> from_text("007"), from_text("830e4"), from_text("nan"), from_text("1e999")
    ('007', 8300000.0, 'nan', '1e999')

    Numbers follow :data:`_NUMBER` (whole numbers without a fraction or exponent are ints, read
    exactly, as the JSON parser reads them); ``true`` / ``false`` in any case are booleans.
    Text past the float range stays text.
    """
    stripped = text.strip()
    if not stripped:
        return text
    if stripped[0] in _NUMBER_START:
        if _NUMBER.fullmatch(stripped) is None:
            return text
        if "." not in stripped and "e" not in stripped and "E" not in stripped:
            try:
                return int(stripped)
            except ValueError:  # more digits than int() converts
                return text
        x = float(stripped)
        return x if math.isfinite(x) else text
    flag = _BOOLEANS.get(stripped.lower())
    return text if flag is None else flag


def label_text(value: Any) -> str:
    """The text a label, or a prediction scored against one, is compared as: :func:`category`
    of the value, where text that spells a number or a boolean counts as that value."""
    return category(from_text(value) if isinstance(value, str) else value)


def key_text(value: Any) -> str | None:
    """The text a result's ``key`` and a label's key are joined on; None for no key.

    Text is trimmed; a string that spells a number stays that string (``"1e5"`` is an id, not
    100000).  A CSV key, which has no type, also joins as the number it spells: see
    :mod:`._labels`."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return _canonical(value)


def number(value: Any) -> float | None:
    """The value as a float (non-finite ones included), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int past the float range still has a sign
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return NON_FINITE.get(value)
    return None


def parse_number(text: str) -> float | None:
    """A number written as text (a CSV cell), or None."""
    try:
        return float(text)
    except ValueError:
        return None


def type_name(value: Any) -> str:
    """A short name for the JSON type of a recorded value: the shape the arm returned."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float) or (isinstance(value, str) and value in NON_FINITE):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        if is_http(value):
            return "http response"
        spelled = value.get("$type")  # the serializer's spelling of a type JSON cannot hold
        return spelled if isinstance(spelled, str) else "dict"
    return type(value).__name__


def _canonical(value: Any) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
    except RecursionError:
        return _TOO_DEEP
