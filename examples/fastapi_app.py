"""A FastAPI service whose traffic is mirrored to the next version of itself.

``ShadowASGIMiddleware`` replays each sampled request against the candidate (here a second
FastAPI app in the same process, run as a task on the server's loop; or a base URL such as
``"http://127.0.0.1:8001"`` for one deployed elsewhere) and writes both responses side by side
to a JSONL file.  The live response streams to the client untouched, never delayed by the
mirror::

    app.add_middleware(ShadowASGIMiddleware, candidate=..., sinks=[sinks.JsonLines(...)])

Run it under uvicorn, from the repository root (an app factory)::

    uvicorn --app-dir examples --factory fastapi_app:create_app --port 8000
    curl -X POST http://127.0.0.1:8000/predict -H 'content-type: application/json' \\
         -d '{"tenure": 5, "usage_drop": 0.5}'
    shadowdeco report shadow.jsonl

``--app-dir`` only adds ``examples`` to the import path; it does not change directory, so the
log is ``./shadow.jsonl`` in the directory uvicorn was started from (or ``$SHADOW_JSONL``).

Keep uvicorn's lifespan on (the default): on SIGTERM the middleware sees
``lifespan.shutdown`` and drains the pending mirrors (up to ``drain_timeout``) before the
process ends.

Self-check, no network: ``python examples/fastapi_app.py --selftest`` (it drives the app with
hand-made ASGI messages, lifespan included, as a server would).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

import shadowdeco
from shadowdeco import sinks
from shadowdeco.middleware import ShadowASGIMiddleware, compare_http


class Features(BaseModel):
    tenure: float
    usage_drop: float


def model_app(version: str, threshold: float, weight: float) -> FastAPI:
    """The service around one model version: the same routes for live and candidate."""
    app = FastAPI(title=f"churn {version}")

    @app.post("/predict")
    async def predict(features: Features) -> dict[str, Any]:
        score = weight * features.usage_drop + (1 - weight) * (1 - min(features.tenure, 10) / 10)
        return {"prediction": "churn" if score > threshold else "stay", "model": version}

    return app


def create_app(jsonl: str | os.PathLike[str] | None = None) -> FastAPI:
    """The live app, mirrored to the candidate app; results go to ``jsonl``."""
    app = model_app("v1", threshold=0.5, weight=0.6)
    app.add_middleware(
        ShadowASGIMiddleware,
        candidate=model_app("v2", threshold=0.45, weight=0.7),
        name="churn-v2-fastapi",
        sample=1.0,  # every request; 0.1 would mirror one in ten
        sinks=[sinks.JsonLines(jsonl or os.environ.get("SHADOW_JSONL", "shadow.jsonl"))],
        compare=compare_http(ignore=["model"]),  # the model name differs by design
        timeout=2.0,
        record_body=True,  # put both bodies in the results (they may hold personal data)
    )
    return app


async def serve(app: Any, requests: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """What a server does, in miniature: lifespan startup, the requests, lifespan shutdown."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    answers = [await post_json(app, "/predict", payload) for payload in requests]
    # A graceful stop: the middleware drains the pending mirrors before passing it on.
    await to_app.put({"type": "lifespan.shutdown"})
    assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
    return answers


async def post_json(app: Any, path: str, payload: Any) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"selftest"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await done.wait()  # the client hangs up once it has the whole response
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, json.loads(data)


def selftest() -> None:
    """Two requests through the app as a server would send them; print the paired results."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shadow.jsonl"
        requests = [{"tenure": 5, "usage_drop": 0.5}, {"tenure": 1, "usage_drop": 0.9}]
        for status, answer in asyncio.run(serve(create_app(path), requests)):
            print("live answered:", status, answer)
        results = [json.loads(line) for line in path.read_text().splitlines()]
        for result in results:
            print(
                "shadow result:",
                f"match={result['match']}",
                f"candidate={result['candidate']['value']['body']}",
                f"({result['candidate']['status']})",
            )
        experiment = shadowdeco.experiment("churn-v2-fastapi")
        print(experiment.stats())
        assert sorted(r["match"] for r in results) == [False, True]
        experiment.close()
    print("selftest ok")


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        selftest()
    else:
        import uvicorn

        uvicorn.run(create_app(), host="127.0.0.1", port=8000)
