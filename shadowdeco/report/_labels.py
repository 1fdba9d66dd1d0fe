"""Ground truth: the labels file, read whole into a dict before the log is read.

>>> labels = load_labels("labels.csv")  # doctest: +SKIP
>>> labels.kind, len(labels.values)  # doctest: +SKIP
('categorical', 143)

Two formats, told apart by the extension (``.csv`` / ``.tsv``; ``.jsonl`` / ``.ndjson`` /
``.json``) or else by the first character:

* CSV with a header row holding a ``key`` and a ``label`` column (other columns are ignored);
* JSON lines, one ``{"key": ..., "label": ...}`` object per line.

Keys are joined on as text (see :mod:`._values`); a key listed twice keeps its last label.
**The labels must fit in memory**: they are one dict of key → label (about 100 bytes a label),
while the log itself is streamed.  A labels file that cannot be read or parsed stops the report
before it starts with an :class:`InputError` naming the file and the line.

The kind of the labels chooses the metrics: *numeric* (MAE, RMSE) when every label is a number
and at least one is not a whole number, *categorical* (accuracy, macro-F1) otherwise — so class
ids 0…9 are classes.  ``metric=`` overrides the choice.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any, Final, Literal

from ._read import InputError
from ._values import category, key_text, number, parse_number

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
    duplicates = 0
    all_numbers, fractional = True, False
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.read(1)
            handle.seek(0)
            for line, key, raw in _rows(path, handle, _is_jsonl(path, first)):
                as_number = parse_number(raw) if isinstance(raw, str) else number(raw)
                if as_number is not None and not math.isfinite(as_number):
                    as_number = None  # NaN or infinite: no error can be measured against it
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

    if forced_numeric:
        kind: LabelKind = "numeric"
    elif metric in CATEGORICAL_METRICS:
        kind = "categorical"
    else:
        kind = "numeric" if values and all_numbers and fractional else "categorical"
    texts: dict[str, str] = {}
    for key, raw in values.items():  # replacing values, not keys, while iterating is safe
        if kind == "numeric":
            values[key] = parse_number(raw) if isinstance(raw, str) else number(raw)
        else:
            text = category(raw)
            values[key] = texts.setdefault(text, text)
    chosen = metric or ("mae" if kind == "numeric" else "accuracy")
    return Labels(path=path, kind=kind, values=values, duplicates=duplicates, metric=chosen)


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
