"""The benchmark's WSGI app: Flask, ``POST /predict`` with a JSON body, ~1 ms of work.

Served by ``gunicorn --chdir benchmarks/apps wsgi_app:app``; see ``common.py`` for the
environment that turns the middleware on.
"""

from __future__ import annotations

from typing import Any

import common
from flask import Flask, request

from shadowdeco.middleware import ShadowWSGIMiddleware


def make_app() -> Flask:
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> dict[str, Any]:
        body = request.get_json()
        return {"id": body["id"], **common.score(body["features"])}

    @app.get("/health")
    def health() -> str:
        return common.health_token()

    return app


app = make_app()
_options = common.shadow_options()
if _options is not None:
    _candidate: Any = common.candidate_url() or make_app().wsgi_app  # an in-process copy
    app.wsgi_app = common.remember(  # type: ignore[method-assign]
        ShadowWSGIMiddleware(app.wsgi_app, _candidate, **_options)
    )
