"""The report as aligned plain text for a terminal: one section per experiment.

>>> print(render_text(report))  # doctest: +SKIP
shadowdeco report: 1,000 results from 1 file, 1 experiment, 2026-11-27 10:00:00Z → …

Each experiment answers the three questions in order: *1. Engineering* (counts, statuses,
errors, output types, latency), *2. Outputs* (the distributions side by side, the confusion
table or the numeric spread, collapse warnings), *3. Performance* (agreement overall and over
time, and the metrics against ground truth with ``--labels``).
"""

from __future__ import annotations

from ._format import (
    NONE,
    count,
    duration_label,
    filters,
    labels_summary,
    ms,
    number,
    percent,
    plural,
    ratio,
    signed,
    spark,
    table,
    visible,
    when,
)
from ._model import Arm, Experiment, GroundTruth, Report

__all__ = ["render_text"]

_RULE_WIDTH = 78
_ENGINEERING_WARNINGS = frozenset({"candidate_types"})
#: Shown with the scores against ground truth, in section 3.
_PERFORMANCE_WARNINGS = frozenset({"labels_never_match"})


def render_text(report: Report) -> str:
    """The whole report as text, ending in a newline."""
    lines = _header(report)
    if not report.experiments:
        lines += ["", "No shadow results to report."]
    for experiment in report.experiments:
        lines += ["", *_experiment(experiment)]
    # A line holds values from the log: none of their control characters reaches the terminal.
    return "\n".join(map(visible, lines)) + "\n"


def _header(report: Report) -> list[str]:
    files = len(report.files)
    exps = len(report.experiments)
    firsts = [e.first for e in report.experiments if e.first is not None]
    lasts = [e.last for e in report.experiments if e.last is not None]
    span = f", {when(min(firsts))} → {when(max(lasts))}" if firsts and lasts else ""
    lines = [
        f"shadowdeco report: {plural(report.results, 'result')} from {plural(files, 'file')}, "
        f"{plural(exps, 'experiment')}{span}"
    ]
    chosen = filters(report)
    if chosen:
        lines.append(f"filters: {chosen}")
    if report.labels is not None:
        labels = report.labels
        lines.append(f"labels: {labels.path} ({labels_summary(labels)})")
    if report.malformed:
        shown = ", ".join(f"{m.path}:{m.line} ({m.reason})" for m in report.malformed_examples)
        more = "" if report.malformed <= len(report.malformed_examples) else ", …"
        lines.append(f"! skipped {plural(report.malformed, 'malformed line')}: {shown}{more}")
    lines.extend(f"! {error}" for error in report.read_errors)
    lines.extend(f"! no results for experiment {name!r}" for name in report.unmatched_experiments)
    return lines


def _experiment(exp: Experiment) -> list[str]:
    title = f"══ {exp.name} "
    lines = [title + "═" * max(3, _RULE_WIDTH - len(title))]
    span = f" · {when(exp.first)} → {when(exp.last)}" if exp.first is not None else ""
    lines.append(f"   {count(exp.counts.results)} results{span}")
    lines += ["", "1. Engineering: does the candidate run, in the right format, and how fast?"]
    lines += _engineering(exp)
    lines += ["", "2. Outputs: does the candidate's output look sane?"]
    lines += _outputs(exp)
    lines += ["", "3. Performance: does it agree with live, and is it better?"]
    lines += _performance(exp)
    return lines


def _engineering(exp: Experiment) -> list[str]:
    c = exp.counts
    lines = []
    if c.source == "stats":
        dropped = sum((c.dropped or {}).values())
        reasons = ", ".join(f"{k} {count(v)}" for k, v in (c.dropped or {}).items())
        lines.append(
            f"   sampled {count(c.sampled)} · emitted {count(c.emitted)} · dropped "
            f"{count(dropped)}{f' ({reasons})' if reasons else ''} · in flight "
            f"{count(c.in_flight)} · sink errors {count(c.sink_errors)}"
        )
        missed = sum((c.sink_drops or {}).values())
        if missed:
            sinks = ", ".join(f"{k} {count(v)}" for k, v in (c.sink_drops or {}).items())
            lines.append(
                f"   {count(missed)} missed by a sink that fell behind ({sinks}): emitted, "
                "but not in the log if that sink wrote it"
            )
        lines.append(
            f"   (from the latest stats line of {c.processes} process"
            f"{'es' if c.processes != 1 else ''}; {count(c.results)} results in the log)"
        )
    else:
        lines.append(
            f"   {count(c.results)} results emitted; sampled and dropped are unknown: the log "
            "holds emitted results only,"
        )
        lines.append(
            '   and has no "kind": "stats" line (drops are counted by Experiment.stats()).'
        )
    if exp.unencodable:
        lines.append(f"   {count(exp.unencodable)} results could not be encoded by the sink")
    if exp.inputs_recorded:
        lines.append(f"   inputs recorded on {count(exp.inputs_recorded)} results")
    if not exp.counts.results:
        return lines
    statuses = sorted(set(exp.live.statuses) | set(exp.candidate.statuses), key=_status_order)
    rows = [["status", "live", "", "candidate", ""]]
    rows += [
        [
            s,
            count(exp.live.statuses.get(s, 0)),
            percent(exp.live.rate(s)),
            count(exp.candidate.statuses.get(s, 0)),
            percent(exp.candidate.rate(s)),
        ]
        for s in statuses
    ]
    lines += ["", *table(rows, "<>>>>", indent=3)]
    lines += _errors("live", exp.live)
    lines += _errors("candidate", exp.candidate)
    lines += [
        "",
        f"   output types  live: {_types(exp.live)}",
        f"                 candidate: {_types(exp.candidate)}",
    ]
    lat_live, lat_cand = exp.live.latency, exp.candidate.latency
    rows = [
        ["latency (ms)", "p50", "p90", "p99", "mean", "max", "n"],
        _latency_row("live", exp.live),
        _latency_row("candidate", exp.candidate),
        [
            "candidate/live",
            ratio(lat_cand.p50, lat_live.p50),
            ratio(lat_cand.p90, lat_live.p90),
            ratio(lat_cand.p99, lat_live.p99),
            ratio(lat_cand.mean, lat_live.mean),
            ratio(lat_cand.max, lat_live.max),
            "",
        ],
    ]
    lines += ["", *table(rows, "<>>>>>>", indent=3)]
    if exp.queue.n:
        q = exp.queue
        lines.append(
            f"   candidate queue wait (ms): p50 {ms(q.p50)} · p90 {ms(q.p90)} · p99 {ms(q.p99)}"
        )
    if not (lat_live.exact and lat_cand.exact):
        lines.append(
            f"   (quantiles from a sample of {count(lat_live.sampled)} values per arm; "
            "mean and max exact)"
        )
    lines += [f"   ! {w.message}" for w in exp.warnings if w.code in _ENGINEERING_WARNINGS]
    return lines


def _status_order(status: str) -> tuple[int, str]:
    order = {"ok": 0, "error": 1, "timeout": 2}
    return order.get(status, 3), status


def _errors(arm_name: str, arm: Arm) -> list[str]:
    if not arm.errors:
        return []
    rows = [
        [
            e.type,
            count(e.count),
            percent(e.count / arm.results if arm.results else None),
            _quote(e.example),
        ]
        for e in arm.errors[:10]
    ]
    more = len(arm.errors) - 10
    tail = [f"     … and {more} more error types"] if more > 0 else []
    return [
        "",
        f"   {arm_name} errors by type (with the first message seen)",
        *table(rows, "<>><", indent=5),
        *tail,
    ]


def _quote(message: str, limit: int = 60) -> str:
    if not message:
        return ""
    text = " ".join(message.split())
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


def _types(arm: Arm) -> str:
    out = arm.output
    if not out.n:
        return "no ok results"
    return ", ".join(f"{t} {percent(n / out.n)}" for t, n in out.types[:5])


def _latency_row(name: str, arm: Arm) -> list[str]:
    q = arm.latency
    return [name, ms(q.p50), ms(q.p90), ms(q.p99), ms(q.mean), ms(q.max), count(q.n)]


def _outputs(exp: Experiment) -> list[str]:
    live, cand = exp.live.output, exp.candidate.output
    if exp.output_kind == "none":
        return ["   no ok results to compare"]
    plus = {True: "+", False: ""}
    lines = [
        f"   distinct values: live {count(live.distinct)}{plus[live.distinct_capped]}, "
        f"candidate {count(cand.distinct)}{plus[cand.distinct_capped]}"
    ]
    if exp.output_kind == "categorical":
        rows = [["value", "live", "", "candidate", ""]]
        rows += [
            [
                _cell(value),
                count(n_live),
                percent(n_live / live.n if live.n else None),
                count(n_cand),
                percent(n_cand / cand.n if cand.n else None),
            ]
            for value, n_live, n_cand in exp.rows
        ]
        lines += ["", *table(rows, "<>>>>", indent=3)]
        if exp.confusion is not None:
            conf = exp.confusion
            header = ["live \\ candidate", *(_cell(v, 12) for v in conf.values)]
            body = [
                [_cell(v, 16), *(count(n) for n in row)]
                for v, row in zip(conf.values, conf.cells, strict=True)
            ]
            lines += ["", *table([header, *body], "<" + ">" * len(conf.values), indent=3)]
            if conf.untracked:
                lines.append(f"   ({count(conf.untracked)} pairs past the cap are in no cell)")
    else:
        lines += ["", *_numeric(exp)]
    lines += [
        f"   ! {w.message}"
        for w in exp.warnings
        if w.code not in _ENGINEERING_WARNINGS and w.code not in _PERFORMANCE_WARNINGS
    ]
    return lines


def _cell(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _numeric(exp: Experiment) -> list[str]:
    live, cand = exp.live.output.numeric, exp.candidate.output.numeric
    names = ("min", "p5", "p25", "p50", "p75", "p95", "max", "mean", "std")
    rows = [["", *names]]
    for arm_name, numeric in (("live", live), ("candidate", cand)):
        if numeric is None:
            rows.append([arm_name, *(NONE for _ in names)])
        else:
            rows.append([arm_name, *(number(getattr(numeric, n)) for n in names)])
    lines = table(rows, "<" + ">" * len(names), indent=3)
    hist = exp.histogram
    if hist is not None:
        top = max(*hist.live, *hist.candidate) or 1.0
        lines += [
            "",
            f"   histogram, {len(hist.live)} bins from {number(hist.edges[0])} to "
            f"{number(hist.edges[-1])}{' (outliers in the end bins)' if hist.clipped else ''}",
            f"     live       {spark(hist.live, 0.0, top)}",
            f"     candidate  {spark(hist.candidate, 0.0, top)}",
        ]
    for arm_name, out in (("live", exp.live.output), ("candidate", exp.candidate.output)):
        if out.non_numeric:
            lines.append(f"   {arm_name}: {count(out.non_numeric)} outputs are not numbers")
    return lines


def _performance(exp: Experiment) -> list[str]:
    a = exp.agreement
    compared = a.matched + a.mismatched
    lines = [
        f"   agreement  {percent(a.rate)} ({count(a.matched)} of {count(compared)} compared"
        f"{f'; {count(a.not_comparable)} not comparable' if a.not_comparable else ''})"
    ]
    rates = [b.rate for b in a.buckets]
    known = [r for r in rates if r is not None]
    if len(known) > 1:
        low, high = min(known), max(known)
        if low == high:  # flat: drawn on the whole 0-100 % scale, and said so
            low, high = 0.0, 1.0
        worst = min((b for b in a.buckets if b.rate is not None), key=lambda b: b.rate or 0.0)
        lines.append(
            f"   over time  {spark(rates, low, high)}  ({duration_label(a.bucket_seconds)} "
            f"buckets; ▁ {percent(low)} … █ {percent(high)}; lowest at {when(worst.start)})"
        )
    if a.score_mean is not None:
        lines.append(f"   mean score {number(a.score_mean)} over {count(a.score_n)} results")
    if exp.ground_truth is not None:
        lines += ["", *_ground_truth(exp.ground_truth)]
    lines += [f"   ! {w.message}" for w in exp.warnings if w.code in _PERFORMANCE_WARNINGS]
    return lines


def _ground_truth(truth: GroundTruth) -> list[str]:
    lines = [
        f"   against ground truth: {count(truth.labeled)} results labeled, {count(truth.paired)} "
        f"scored for both arms"
    ]
    gaps = []
    if truth.live_failed:
        gaps.append(f"live gave no usable prediction on {count(truth.live_failed)}")
    if truth.candidate_failed:
        gaps.append(f"the candidate gave none on {count(truth.candidate_failed)}")
    if truth.unlabeled:
        gaps.append(f"{count(truth.unlabeled)} keys have no label")
    if truth.no_key:
        gaps.append(f"{count(truth.no_key)} results have no key")
    if gaps:
        lines.append("   (" + "; ".join(gaps) + ")")
    if not truth.paired:
        return lines
    points = truth.kind == "categorical"
    rows = [["metric", "live", "candidate", "difference"]]
    for metric, live_value in truth.live.items():
        rows.append(
            [
                metric + (" *" if metric == truth.metric else ""),
                number(live_value),
                number(truth.candidate.get(metric)),
                signed(truth.difference.get(metric), points=points),
            ]
        )
    lines += table(rows, "<>>>", indent=3)
    verdict = {
        "candidate": "the candidate is better",
        "live": "the candidate is worse",
        "tie": "the candidate and live score the same",
    }
    if truth.better is not None:
        lines.append(f"   → {verdict[truth.better]} by {truth.metric} (* the lead metric)")
    return lines
