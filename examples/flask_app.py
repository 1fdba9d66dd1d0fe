"""A Flask service whose traffic is mirrored to the next version of itself.

The live app answers every request.  ``ShadowWSGIMiddleware`` replays each sampled request
against the candidate, here a second Flask app in the same process (pass a base URL such as
``"http://127.0.0.1:8001"`` instead for a candidate deployed elsewhere), after the live
response has gone out, and writes both responses side by side to a JSONL file::

    app.wsgi_app = ShadowWSGIMiddleware(app.wsgi_app, candidate=..., sinks=[sinks.JsonLines(...)])

Run it under gunicorn, from the repository root (an app factory: one app per process)::

    gunicorn --chdir examples --workers 4 --bind 127.0.0.1:8000 'flask_app:create_app()'
    curl 'http://127.0.0.1:8000/predict?tenure=2&usage_drop=0.7'
    shadowdeco report examples/shadow.jsonl

``--preload`` works as well (each worker starts its own shadow workers after the fork), and
a graceful stop (SIGTERM) drains the pending mirrors before a worker exits.  With several
workers give each its own file, or let them append to one (JsonLines writes whole lines).

Self-check, no network: ``python examples/flask_app.py --selftest``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from flask import Flask, request

from shadowdeco import sinks
from shadowdeco.middleware import ShadowWSGIMiddleware, compare_http


def churn_v1(tenure: float, usage_drop: float) -> str:
    score = 0.6 * usage_drop + 0.4 * (1 - min(tenure, 10) / 10)
    return "churn" if score > 0.5 else "stay"


def churn_v2(tenure: float, usage_drop: float) -> str:
    score = 0.7 * usage_drop + 0.3 * (1 - min(tenure, 10) / 10)
    return "churn" if score > 0.45 else "stay"


def model_app(version: str, model: object) -> Flask:
    """The service around one model version: the same routes for live and candidate."""
    app = Flask(f"churn-{version}")

    @app.get("/predict")
    def predict() -> dict[str, str]:
        tenure = float(request.args.get("tenure", "0"))
        usage_drop = float(request.args.get("usage_drop", "0"))
        return {"prediction": model(tenure, usage_drop), "model": version}  # type: ignore[operator]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def create_app(jsonl: str | os.PathLike[str] | None = None) -> Flask:
    """The live app, mirrored to the candidate app; results go to ``jsonl``."""
    app = model_app("v1", churn_v1)
    app.wsgi_app = ShadowWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        candidate=model_app("v2", churn_v2),
        name="churn-v2-flask",
        sample=1.0,  # every request; 0.1 would mirror one in ten
        sinks=[sinks.JsonLines(jsonl or os.environ.get("SHADOW_JSONL", "shadow.jsonl"))],
        compare=compare_http(ignore=["model"]),  # the model name differs by design
        timeout=2.0,
    )
    return app


def selftest() -> None:
    """One request through Flask's test client; print the paired result."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shadow.jsonl"
        app = create_app(path)
        response = app.test_client().get("/predict?tenure=5&usage_drop=0.5")
        answer = response.get_json()
        response.close()  # as a server does: the WSGI iterable's close() ends the request
        print("live answered:", response.status_code, answer)
        experiment = app.wsgi_app.shadow  # type: ignore[attr-defined]
        assert experiment.flush(5), "the mirror did not finish"
        (line,) = path.read_text().splitlines()
        result = json.loads(line)
        print(
            "shadow result:",
            f"match={result['match']}",
            f"live={result['live']['value']['status']}",
            f"candidate={result['candidate']['value']['status']}",
            f"({result['candidate']['status']}, {result['candidate']['duration_s'] * 1000:.1f} ms)",
        )
        print(experiment.stats())
        assert answer["model"] == "v1"
        assert result["match"] is False  # v2 changed this customer's prediction
        experiment.close()
    print("selftest ok")


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        selftest()
    else:
        create_app().run(host="127.0.0.1", port=8000)
