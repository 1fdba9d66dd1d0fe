"""``shadowdeco report FILE…``: the command line of the report.

>>> main(["shadow.jsonl", "--labels", "labels.csv", "--html", "report.html"])  # doctest: +SKIP
0

Exit status: **0** the report is complete; **1** the report was printed but is incomplete
(malformed lines were skipped, a file failed partway, or an ``--experiment`` matched nothing);
**2** nothing was reported: a file or the labels could not be read, or an option is wrong.
Errors are one line on stderr naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final, TextIO

from . import build_report
from ._format import plural
from ._html import render_html
from ._json import render_json
from ._labels import METRICS
from ._model import Report
from ._read import InputError, parse_time
from ._text import render_text

__all__ = ["configure", "main", "run"]

DESCRIPTION: Final = """\
Answer the three questions of a shadow test from JSONL logs: does the candidate run (errors,
timeouts, latency next to live), do its outputs look sane (distributions side by side, a
warning when they collapse), and does it agree with live and beat it on ground truth
(--labels).  Rotated backups (FILE.1, FILE.2, FILE.1.gz, ...) are read with FILE.
"""

EPILOG: Final = """\
exit status: 0 complete; 1 printed but incomplete (malformed lines skipped, a file failed
partway, or an --experiment matched nothing); 2 unreadable file or labels, or a bad option.
"""


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the report's arguments to ``parser`` (the ``report`` sub-command's)."""
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSONL logs (globs allowed, '-' for stdin); FILE.1, FILE.2, ... are read too",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="only this experiment (repeat for more; globs such as 'churn-*' allowed)",
    )
    parser.add_argument(
        "--since",
        type=_time,
        metavar="ISO",
        help="only results that started at or after this time (UTC unless a zone is given)",
    )
    parser.add_argument(
        "--until", type=_time, metavar="ISO", help="only results that started before this time"
    )
    parser.add_argument(
        "--labels",
        metavar="FILE",
        help="ground truth: CSV with 'key' and 'label' columns, or JSON lines "
        '{"key": ..., "label": ...}, joined on the result\'s key (read into memory)',
    )
    parser.add_argument(
        "--metric",
        choices=METRICS,
        help="the metric to lead with (default: accuracy for class labels, mae for numbers)",
    )
    parser.add_argument(
        "--html", metavar="OUT", help="also write a self-contained HTML page with charts"
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON (schema shadowdeco.report/1), not text"
    )
    parser.add_argument(
        "--top",
        type=_positive,
        default=10,
        metavar="N",
        help="output values to list per experiment (default 10)",
    )
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Build and print the report for parsed ``args``; the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if args.metric is not None and args.labels is None:
        print("shadowdeco report: --metric needs --labels", file=err)
        return 2
    try:
        report = build_report(
            args.files,
            experiments=args.experiment,
            since=args.since,
            until=args.until,
            labels=args.labels,
            metric=args.metric,
            top=args.top,
        )
    except InputError as exc:
        print(f"shadowdeco report: {exc}", file=err)
        return 2
    if args.html:
        try:
            _write(args.html, render_html(report))
        except OSError as exc:
            print(f"shadowdeco report: cannot write {args.html}: {exc.strerror or exc}", file=err)
            return 2
    out.write(render_json(report) if args.json else render_text(report))
    out.flush()
    for problem in _problems(report):
        print(f"shadowdeco report: {problem}", file=err)
    if args.html:
        print(f"shadowdeco report: wrote {args.html}", file=err)
    return 0 if report.complete else 1


def _problems(report: Report) -> list[str]:
    problems = []
    if report.malformed:
        where = ", ".join(f"{m.path}:{m.line}" for m in report.malformed_examples)
        problems.append(f"skipped {plural(report.malformed, 'malformed line')} (first: {where})")
    problems.extend(report.read_errors)
    problems.extend(f"no results for experiment {n!r}" for n in report.unmatched_experiments)
    return problems


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole: a temporary file renamed over it."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def main(argv: list[str] | None = None) -> int:
    """``shadowdeco report`` on its own: parse ``argv`` and run."""
    parser = configure(
        argparse.ArgumentParser(
            prog="shadowdeco report",
            description=DESCRIPTION,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return run(parser.parse_args(argv))
