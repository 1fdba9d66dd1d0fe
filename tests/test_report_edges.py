"""The report and the comparators at their edges, found by a review (each test failed before
its fix): malformed stats lines, broken gzip backups, backups named twice, JSON string labels,
values near the float limit, and list indices in ``compare.ignore``."""

from __future__ import annotations

import gzip
import json
import math
import random
import zlib
from pathlib import Path

from shadowdeco import compare, report
from shadowdeco.__main__ import main
from shadowdeco.report._stats import quantile


def _result_line(i, value=1, *, end="\n"):
    """One result line of the v1 shape, both arms ok with ``value``."""
    arm = {"status": "ok", "value": value, "error": None, "duration_s": 0.01}
    record = {
        "v": 1,
        "experiment": "exp",
        "id": f"r{i}",
        "started_at": "2026-11-27T10:00:00+00:00",
        "key": i,
        "live": arm,
        "candidate": arm,
        "queue_s": 0.0,
        "match": True,
    }
    return json.dumps(record) + end


# Before the fix: read_records() turns OSError/EOFError into a read error ("a file failed
# partway"), but a gzip backup whose deflate data is corrupt raises zlib.error, which is
# neither: the report (and `shadowdeco report`) dies with a traceback instead of exiting 1 with
# the lines before.


def _payload() -> bytes:
    rnd = random.Random(0)
    return "".join(_result_line(i, rnd.random()) for i in range(2000)).encode()


def _corrupt_that_zlib_rejects() -> bytes:
    good = gzip.compress(_payload(), mtime=0)
    for seed in range(500):
        bad = bytearray(good)
        rnd = random.Random(seed)
        for _ in range(3):
            bad[rnd.randrange(20, len(bad) - 20)] ^= 0xFF
        try:
            gzip.decompress(bytes(bad))
        except zlib.error:
            return bytes(bad)
        except (OSError, EOFError):
            continue
    raise AssertionError("no corruption found that zlib rejects")


def test_corrupt_gzip_backup_is_a_read_error_not_a_crash(tmp_path: Path, capsys) -> None:
    log = tmp_path / "shadow.jsonl"
    log.write_text("")
    (tmp_path / "shadow.jsonl.1.gz").write_bytes(_corrupt_that_zlib_rejects())
    code = main(["report", str(log)])  # raises zlib.error
    assert code == 1
    assert "cannot read" in capsys.readouterr().err


# Before the fix: docs/report.md: when both FILE.1 and FILE.1.gz exist (logrotate's compress
# running) the plain one is read, and a path given by a glob / the shell is read once. But a
# shell- or report-expanded glob such as 'shadow.jsonl*' names FILE.1.gz explicitly and it is
# read as well, so every result of that backup is counted twice.


def test_a_glob_over_a_backup_both_plain_and_gzipped_reads_it_once(tmp_path: Path) -> None:
    (tmp_path / "shadow.jsonl").write_text(_result_line(0))
    (tmp_path / "shadow.jsonl.1").write_text(_result_line(1))
    (tmp_path / "shadow.jsonl.1.gz").write_bytes(gzip.compress(_result_line(1).encode()))
    assert report.build_report([str(tmp_path / "shadow.jsonl")]).results == 2
    assert report.build_report([str(tmp_path / "shadow.jsonl*")]).results == 2


# Before the fix: _histogram() claims "no step overflows, even from -1e308 to 1e308", but the
# edges are low + i * width, and i * width overflows: edges 18 and 19 become inf, and the
# largest output (1e308) is counted in bin 17 instead of the last bin; --json then shows null
# edges.


def test_histogram_of_values_spanning_the_float_range(tmp_path: Path) -> None:
    log = tmp_path / "shadow.jsonl"
    values = [-1e308, 1e308, 0.5, 1.5]
    log.write_text("".join(_result_line(i, v) for i, v in enumerate(values)))
    exp = report.build_report([str(log)]).experiments[0]
    hist = exp.histogram
    assert hist is not None
    assert all(math.isfinite(e) for e in hist.edges), hist.edges
    assert hist.live[-1] == 0.25, hist.live  # 1e308 belongs in the last bin


# Before the fix: compare.ignore with several index paths into the same list deletes the items
# one after the other, so the second index refers to the already-shifted list: ignore("items.0",
# "items.1") drops the original items 0 and 2, and the result depends on the order of the paths.


def test_ignoring_two_list_indices_ignores_those_two_items() -> None:
    live = {"items": [1, 2, 3]}
    candidate = {"items": [9, 9, 3]}  # differs only at indices 0 and 1
    assert compare.ignore("items.1", "items.0")(live, candidate) is True
    assert compare.ignore("items.0", "items.1")(live, candidate) is True


def test_ignoring_index_paths_is_order_independent_at_top_level() -> None:
    assert compare.ignore("0", "1")([1, 2, 3], [9, 9, 3]) == compare.ignore("1", "0")(
        [1, 2, 3], [9, 9, 3]
    )


# Before the fix: docs/report.md (Joining): "A JSON string keeps its type: ... a label "1.10" is
# not 1.1". load_labels() nevertheless runs float() on JSON string labels, so class names that
# spell decimals ("1.10", "2.5": versions, codes) make the labels *numeric*; string predictions
# that equal their labels then count as failed predictions and there is no score at all.


def test_json_string_labels_that_spell_decimals_stay_classes(tmp_path: Path) -> None:
    classes = ["1.10", "2.5", "1.10", "3.25"]
    log = tmp_path / "shadow.jsonl"
    log.write_text("".join(_result_line(i, c) for i, c in enumerate(classes)))
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"key": i, "label": c}) + "\n" for i, c in enumerate(classes))
    )
    rep = report.build_report([str(log)], labels=str(labels))
    truth = rep.experiments[0].ground_truth
    assert rep.labels.kind == "categorical", rep.labels
    assert truth.paired == 4, truth
    assert truth.live["accuracy"] == 1.0


# Before the fix: Linear interpolation in quantile() computes ordered[high] - ordered[low],
# which overflows to inf for finite outputs of opposite sign near the float range, so the report
# prints p5/p50 of [-1e308, 1e308] as inf (and p0 as NaN) though every value is finite.


def test_quantile_of_huge_opposite_values_is_finite_and_in_range() -> None:
    values = [-1e308, 1e308]
    for p in (0.0, 0.05, 0.5, 0.95):
        q = quantile(values, p)
        assert q is not None, p
        assert math.isfinite(q), (p, q)
        assert -1e308 <= q <= 1e308
    assert quantile(values, 0.5) == 0.0


# Before the fix: A stats line whose "sampled" is a JSON boolean (slightly malformed input)
# passes the `isinstance(sampled, int)` check but is then left out of the snapshot; the next
# stats line of the same experiment/process crashes the whole report with KeyError('sampled')
# instead of being skipped or counted as malformed.


def _stats_json(**kw):
    return json.dumps({"v": 1, "kind": "stats", "experiment": "exp", "process": "h:1:a", **kw})


def test_stats_line_with_boolean_sampled_does_not_crash_the_report(tmp_path: Path, capsys) -> None:
    log = tmp_path / "shadow.jsonl"
    log.write_text(
        "\n".join(
            [
                _result_line(0, end=""),
                _stats_json(sampled=True, emitted=1),
                _stats_json(sampled=5, emitted=1),
            ]
        )
        + "\n"
    )
    code = main(["report", str(log)])  # raises KeyError: 'sampled'
    assert code in (0, 1)
