"""A small Flask app for tests/test_servers.py: ``gunicorn -c gunicorn_conf.py flask_app:app``.

Configured by environment variables (see server_config): with ``SHADOW_MODE=on`` its
``wsgi_app`` is wrapped in ``ShadowWSGIMiddleware``, the way a Flask user would do it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import server_config
import stats_at_exit
from flask import Flask, Response, request

from shadowdeco.middleware import ShadowWSGIMiddleware

app = Flask(__name__)


@app.get("/hello")
def hello() -> Response:
    return Response("hello, world\n", mimetype="text/plain", headers={"X-App": "flask"})


@app.get("/json")
def as_json() -> dict[str, Any]:
    return {"x": request.args.get("x"), "items": [1, 2, 3]}


@app.route("/echo", methods=["POST", "PUT"])
def echo() -> Response:
    return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")


@app.post("/upload")
def upload() -> dict[str, int]:
    total = 0
    while chunk := request.stream.read(65536):
        total += len(chunk)
    return {"length": total}


@app.get("/whoami")
def whoami() -> dict[str, int]:
    """This worker's pid; with ``?hold=FILE``, say "I am in" and wait until FILE exists."""
    hold = request.args.get("hold")
    if hold:
        Path(f"{hold}.{os.getpid()}").touch()
        server_config.wait_for(hold)
    return {"pid": os.getpid()}


@app.get("/stream")
def stream() -> Response:
    """Five chunks; the last four only once the file ``?flag=`` exists."""
    flag = request.args.get("flag", "")

    def chunks() -> Iterator[bytes]:
        yield b"chunk-0\n"
        server_config.wait_for(flag)
        for i in range(1, 5):
            time.sleep(0.01)
            yield f"chunk-{i}\n".encode()

    return Response(chunks(), mimetype="text/plain")


if server_config.MODE != "off":
    live = app.wsgi_app
    app.wsgi_app = ShadowWSGIMiddleware(  # type: ignore[method-assign]
        live, server_config.wsgi_candidate(live), **server_config.options("flask-app")
    )
    stats_at_exit.watch(app.wsgi_app.shadow)
