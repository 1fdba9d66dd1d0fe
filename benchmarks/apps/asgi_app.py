"""The benchmark's ASGI app: FastAPI, ``POST /predict`` with a JSON body, ~1 ms of work
(a plain ``def`` endpoint, run in FastAPI's thread pool, as most model servers are written).

Served by ``uvicorn --app-dir benchmarks/apps asgi_app:app``; see ``common.py`` for the
environment that turns the middleware on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import common
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from shadowdeco.middleware import ShadowASGIMiddleware


class Features(BaseModel):
    id: int
    features: list[float]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Runs after the middleware drained its mirrors on lifespan.shutdown.
    common.write_stats("lifespan")


def make_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.post("/predict")
    def predict(body: Features) -> dict[str, Any]:
        return {"id": body.id, **common.score(body.features)}

    @app.get("/health", response_class=PlainTextResponse)
    def health() -> str:
        return common.health_token()  # as plain text, not a JSON string: as the WSGI app

    return app


app: Any = make_app()
_options = common.shadow_options()
if _options is not None:
    _candidate: Any = common.candidate_url() or make_app()  # an in-process copy
    app = common.remember(ShadowASGIMiddleware(app, _candidate, **_options))
