"""A Starlette app whose view calls a ``@shadow``-decorated function: ``uvicorn
starlette_decorated:app``.

The app is wrapped in ``ShadowASGIMiddleware`` (mirroring nothing, ``sample=0``) so that, as
DESIGN I7 describes, the middleware observes ``lifespan.shutdown``; the decorated function's
candidate is slow (``SHADOW_SLEEP``), so its shadows are still pending at a SIGTERM.
"""

from __future__ import annotations

import os
import time
from typing import Any

import server_config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shadowdeco import shadow, sinks
from shadowdeco.middleware import ShadowASGIMiddleware


def predict_v2(x: int) -> int:
    time.sleep(server_config.SLEEP)
    server_config.candidate_finished()
    return x


@shadow(
    candidate=predict_v2,
    name="decorated-predict",
    sinks=[sinks.JsonLines(server_config.OUT / f"results.{os.getpid()}.jsonl", flush_interval=0.2)],
)
def predict(x: int) -> int:
    return x


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello, world\n")


async def predict_view(request: Request) -> Response:
    return JSONResponse({"y": predict(int(request.query_params["x"]))})


async def never(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("not mirrored: sample=0")


app = ShadowASGIMiddleware(
    Starlette(routes=[Route("/hello", hello), Route("/predict", predict_view)]),
    never,
    name="decorated-app-mirror",
    sample=0.0,
    sinks=[],
    drain_timeout=20,
)
