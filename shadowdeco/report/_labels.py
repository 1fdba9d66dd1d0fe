"""Ground truth: the labels file, read whole into a dict before the log is read.

>>> labels = load_labels("labels.csv")  # doctest: +SKIP
>>> labels.kind, len(labels.values)  # doctest: +SKIP
('categorical', 143)

Two formats, told apart by the extension (``.csv`` / ``.tsv``; ``.jsonl`` / ``.ndjson`` /
``.json``) or else by the first character:

* CSV with a header row holding a ``key`` and a ``label`` column (other columns are ignored);
* JSON lines, one ``{"key": ..., "label": ...}`` object per line.

Keys are joined on as text (see :mod:`._values`: a cell ``42.0`` joins a key ``42``); a key
listed twice keeps its last label.  A row with no label (an empty CSV cell, a JSON ``null``, or
NaN) is skipped and counted in ``blank``: its key is as unlabeled as a key the file never names.
**The labels must fit in memory**: they are one dict of key → label (about 100 bytes a label),
while the log itself is streamed.  A labels file that cannot be read or parsed stops the report
before it starts with an :class:`InputError` naming the file and the line.

The kind of the labels chooses the metrics: *numeric* (MAE, RMSE) when every label is a number
and at least one has a fraction; *categorical* (accuracy, macro-F1) otherwise, so class ids
0…99 are classes.  Whole-number labels (``whole_numbers``: a regression target written
``275.0``, a rating 1…5) are scored as numbers in an experiment where more than 1 % of the
labeled results have a prediction with a fraction: see :mod:`._analyze`.  ``metric=``
overrides the choice, for every experiment.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
from collections.abc import Iterator
from typing import Any, Final, Literal

from ._read import InputError
from ._values import category, from_text, key_text, label_text, number, parse_number

__all__ = ["CATEGORICAL_METRICS", "METRICS", "NUMERIC_METRICS", "Labels", "load_labels"]

CATEGORICAL_METRICS: Final = ("accuracy", "macro_f1")
NUMERIC_METRICS: Final = ("mae", "rmse")
METRICS: Final = CATEGORICAL_METRICS + NUMERIC_METRICS

LabelKind = Literal["categorical", "numeric"]


@dataclasses.dataclass(frozen=True, slots=True)
class Labels:
    """Labels by key text: category text for categorical labels, floats for numeric ones."""

    path: str
    kind: LabelKind
    values: dict[str, str | float]
    duplicates: int
    #: the metric the report leads with: chosen by ``kind`` unless named.
    metric: str
    #: rows with no label (an empty cell, null, NaN): skipped, so their keys are unlabeled.
    blank: int = 0
    #: categorical labels that are all whole numbers, with the kind not named by ``metric=``:
    #: an experiment whose predictions have fractions scores them as numbers (MAE) instead.
    whole_numbers: bool = False
    #: CSV keys that spell a number, by the number's text (``"42"`` for a cell ``42.0``)
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)


def load_labels(path: str, metric: str | None = None) -> Labels:
    """Read ``path`` (CSV or JSON lines); :class:`InputError` names what is wrong."""
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if os.path.isdir(path):
        raise InputError(f"cannot read labels {path}: it is a directory")
    forced_numeric = metric in NUMERIC_METRICS
    # One pass, keeping each label's raw value (one shared string per distinct text); the kind
    # is known at the end, and the values are converted in place then.
    values: dict[str, Any] = {}
    shared: dict[str, str] = {}
    duplicates = blank = 0
    all_numbers, fractional = True, False
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            # The first line is read ahead (not seeked back to): a pipe (``<(zcat …)``) works.
            first = next(handle, "")
            jsonl = _is_jsonl(path, first[:1])
            for line, key, raw in _rows(path, itertools.chain([first], handle), jsonl):
                # A CSV cell is text that may spell a number; a JSON string stays a string
                # (but for the spellings of NaN and infinities the results use).
                text = isinstance(raw, str) and not jsonl
                as_number = parse_number(raw) if text else number(raw)
                if raw is None or raw == "" or (as_number is not None and math.isnan(as_number)):
                    blank += 1  # no label (yet): the key stays unlabeled
                    continue
                if as_number is not None and not math.isfinite(as_number):
                    as_number = None  # infinite: no error can be measured against it
                if as_number is None:
                    all_numbers = False
                    if forced_numeric:
                        raise InputError(
                            f"labels {path}, line {line}: label {raw!r} is not a number "
                            f"(--metric {metric} needs numeric labels)"
                        )
                elif not as_number.is_integer():
                    fractional = True
                if key in values:
                    duplicates += 1
                values[key] = shared.setdefault(raw, raw) if isinstance(raw, str) else raw
    except OSError as exc:
        raise InputError(f"cannot read labels {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read labels {path}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise InputError(f"cannot read labels {path}: {exc}") from exc

    kind, whole_numbers = _kind(metric, bool(values) and all_numbers, fractional)
    _convert(values, kind, typed=jsonl)
    chosen = metric or ("mae" if kind == "numeric" else "accuracy")
    return Labels(
        path=path,
        kind=kind,
        values=values,
        duplicates=duplicates,
        metric=chosen,
        blank=blank,
        whole_numbers=whole_numbers,
        aliases={} if jsonl else _number_keys(values),
    )


def _number_keys(values: dict[str, Any]) -> dict[str, str]:
    """CSV keys that spell a number, by that number's text (``"42.0"`` → ``"42"``): a CSV
    cell has no type, so it joins a result key ``42`` too.  A key the file names itself
    wins over another's alias."""
    aliases: dict[str, str] = {}
    for key in values:
        value = from_text(key)
        if not isinstance(value, str):
            alias = key_text(value)
            if alias is not None and alias != key and alias not in values:
                aliases.setdefault(alias, key)
    return aliases


def _kind(metric: str | None, numbers: bool, fractional: bool) -> tuple[LabelKind, bool]:
    """The labels' kind, and whether they are whole numbers an experiment may score as numbers
    (``numbers``: every label is a finite number)."""
    if metric in NUMERIC_METRICS:
        return "numeric", False
    if metric in CATEGORICAL_METRICS:
        return "categorical", False
    if numbers and fractional:
        return "numeric", False
    return "categorical", numbers


def _convert(values: dict[str, Any], kind: LabelKind, *, typed: bool) -> None:
    """Each raw label as a float (numeric) or its text (categorical, one string per class);
    ``typed``: from JSON, whose strings are strings, not the numbers they may spell."""
    texts: dict[str, str] = {}
    for key, raw in values.items():  # replacing values, not keys, while iterating is safe
        if kind == "numeric":
            values[key] = parse_number(raw) if isinstance(raw, str) else number(raw)
        else:  # a CSV cell spelling a number or boolean is one; JSON values keep their type
            text = category(raw) if typed else label_text(raw)
            values[key] = texts.setdefault(text, text)


def _is_jsonl(path: str, first: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        return False
    if ext in (".jsonl", ".ndjson", ".json"):
        return True
    return first == "{"


def _rows(path: str, handle: Any, jsonl: bool) -> Iterator[tuple[int, str, Any]]:
    """``(line number, key text, raw label)`` for each label."""
    if jsonl:
        for line, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError:
                raise InputError(f"labels {path}, line {line}: not JSON") from None
            except RecursionError:  # "[[[[…": deeper than the parser's stack
                raise InputError(f"labels {path}, line {line}: nested too deeply") from None
            if not isinstance(record, dict) or "key" not in record or "label" not in record:
                raise InputError(
                    f'labels {path}, line {line}: expected {{"key": ..., "label": ...}}'
                )
            key = key_text(record["key"])
            if key is None:
                raise InputError(f"labels {path}, line {line}: the key is null")
            yield line, key, record["label"]
        return
    dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
    reader = csv.DictReader(handle, dialect=dialect)
    fields = [(f or "").strip().lower() for f in reader.fieldnames or []]
    if "key" not in fields or "label" not in fields:
        raise InputError(
            f"labels {path}: the CSV header must name a 'key' and a 'label' column "
            f"(found: {', '.join(fields) or 'no header'})"
        )
    reader.fieldnames = fields
    for row in reader:
        line = reader.line_num
        key, label = row.get("key"), row.get("label")
        if key is None or label is None or not key.strip():
            raise InputError(f"labels {path}, line {line}: a row without a key or a label")
        yield line, key.strip(), label.strip()
