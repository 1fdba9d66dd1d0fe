"""The real demo (``make demo``): a scikit-learn model in shadow mode, then the report.

    pip install 'shadowdeco[examples]'      # scikit-learn
    python examples/demo_sklearn.py         # about 15 seconds

1. Train two classifiers on scikit-learn's bundled hand-written digits (no download):
   **v1**, a logistic regression, and **v2**, a random forest.
2. Serve v1 as the live ``predict`` with v2 in shadow through ``@shadow``; every paired result
   goes to a ``sinks.JsonLines`` log, keyed by the row id.
3. Replay the held-out rows through ``predict`` from several threads, as a service would see
   them, then ``shadowdeco.flush()`` and append the experiment's ``stats()`` to the log.
4. Write the true labels of the held-out rows to a CSV, and run the report: the text report
   (including both models' accuracy against the true labels) and ``report.html``.

The log and the labels stay in a temporary directory, printed at the end, so that
``shadowdeco report`` can be run on them again by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shadowdeco
from shadowdeco import report, shadow, sinks

Features = tuple[float, ...]

# A forest's predict, called from several threads at once, can emit a spurious UserWarning about
# how scikit-learn passes its configuration to joblib (a known race, scikit-learn issue #32631);
# the predictions are unaffected, so keep it out of the demo's output.
warnings.filterwarnings(
    "ignore", message=r"`sklearn\.utils\.parallel\.delayed` should be used", category=UserWarning
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html", default="report.html", help="where to write the HTML report")
    parser.add_argument("--threads", type=int, default=4, help="threads replaying the rows")
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds each thread waits between requests"
    )
    args = parser.parse_args()
    started = time.perf_counter()

    # 1. Two models on the same split.
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    v2 = RandomForestClassifier(n_estimators=100, random_state=0).fit(x_train, y_train)
    print(f"trained v1 (logistic regression) and v2 (random forest) on {len(x_train)} rows")

    # 2. v1 serves; v2 runs in shadow on the same requests.
    workdir = tempfile.mkdtemp(prefix="shadowdeco-demo-")
    log_path = os.path.join(workdir, "shadow.jsonl")
    log = sinks.JsonLines(log_path)

    def predict_v2(row_id: int, features: Features) -> int:
        """The candidate: the random forest."""
        return int(v2.predict([features])[0])

    @shadow(
        candidate=predict_v2,
        name="digits-v2",
        sinks=[log],
        key=lambda row_id, features: row_id,
        timeout=5.0,
    )
    def predict(row_id: int, features: Features) -> int:
        """The live model: the logistic regression."""
        return int(v1.predict([features])[0])

    # 3. Replay the held-out rows from several threads, as requests would arrive.
    rows = [(i, tuple(float(v) for v in x)) for i, x in enumerate(x_test)]

    def request(row: tuple[int, Features]) -> int:
        time.sleep(args.pause)  # requests arrive over a few seconds, not all at once
        return predict(*row)

    with ThreadPoolExecutor(args.threads) as callers:
        served = list(callers.map(request, rows))
    shadowdeco.flush(30)
    experiment = predict.shadow  # type: ignore[attr-defined]
    log.close()
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(report.stats_record(experiment)) + "\n")
    print(f"served {len(served)} requests from {args.threads} threads; v2 ran in shadow")

    # 4. Ground truth arrives later: one label per row id.
    labels_path = os.path.join(workdir, "labels.csv")
    with open(labels_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label"])
        writer.writerows((i, int(y)) for i, y in enumerate(y_test))

    summary = report.build_report([log_path], labels=labels_path)
    print()
    print(report.render_text(summary))
    with open(args.html, "w", encoding="utf-8") as handle:
        handle.write(report.render_html(summary))

    truth = summary.experiments[0].ground_truth
    assert truth is not None
    print(
        f"accuracy against the true labels: v1 (live) {truth.live['accuracy']:.4f}, "
        f"v2 (shadow) {truth.candidate['accuracy']:.4f}; scikit-learn's accuracy_score "
        f"agrees: {accuracy_score(y_test, v1.predict(x_test)):.4f}, "
        f"{accuracy_score(y_test, v2.predict(x_test)):.4f}"
    )
    print(f"wrote {args.html}; the log and labels are in {workdir}:")
    print(f"  shadowdeco report {log_path} --labels {labels_path} --html {args.html}")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
