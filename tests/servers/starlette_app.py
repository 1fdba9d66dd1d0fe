"""A small Starlette app for tests/test_servers.py: ``uvicorn starlette_app:app``.

Configured by environment variables (see server_config): with ``SHADOW_MODE=on`` the app is
wrapped in ``ShadowASGIMiddleware``.  Its lifespan shutdown writes the experiment's
``stats()``: the middleware sees ``lifespan.shutdown`` first and drains the pending mirrors
before passing it on, so the counters written are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import server_config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from shadowdeco.middleware import ShadowASGIMiddleware


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello, world\n", headers={"X-App": "starlette"})


async def as_json(request: Request) -> Response:
    return JSONResponse({"x": request.query_params.get("x"), "items": [1, 2, 3]})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "text/plain"))


async def upload(request: Request) -> Response:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"length": total})


async def whoami(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


async def wait_for(path: str, timeout: float = server_config.WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def stream(request: Request) -> Response:
    """Five chunks; the last four only once the file ``?flag=`` exists."""
    flag = request.query_params.get("flag", "")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"chunk-0\n"
        await wait_for(flag)
        for i in range(1, 5):
            await asyncio.sleep(0.01)
            yield f"chunk-{i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


shadowed: ShadowASGIMiddleware | None = None


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    yield
    if shadowed is not None:
        server_config.write_stats([shadowed.shadow])


routes = [
    Route("/hello", hello),
    Route("/json", as_json),
    Route("/echo", echo, methods=["POST", "PUT"]),
    Route("/upload", upload, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/stream", stream),
]
starlette_app = Starlette(routes=routes, lifespan=lifespan)
app: Any = starlette_app

if server_config.MODE != "off":
    shadowed = app = ShadowASGIMiddleware(
        starlette_app,
        server_config.asgi_candidate(starlette_app),
        drain_timeout=float(os.environ.get("SHADOW_DRAIN", "20")),
        **server_config.options("starlette-app"),
    )
