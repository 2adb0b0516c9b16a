"""The same tiny JSON endpoint in three ASGI stacks, for ``bench_asgi_overhead.py``.

Each app answers ``GET /recommend?user=<id>&n=<k>`` with one fixed 10-item JSON body built
with orjson (the serving service's encoder), and ``GET /healthz``. No Redis and no maths: what
differs between them is the framework's own routing, parameter parsing and response path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

BODY = orjson.dumps({"version": 1, "source": "model",
                     "items": [{"id": f"m{j}", "score": 4.5 - j / 10} for j in range(10)]})


def _body(user: str, n: int) -> bytes:
    return orjson.dumps({"user": user, "n": n, "raw": orjson.Fragment(BODY)})


# -- raw ASGI -----------------------------------------------------------------------------------
_JSON = [(b"content-type", b"application/json")]


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        body = b"ok\n"
    else:
        q = parse_qs(scope["query_string"].decode())
        body = _body(q.get("user", [""])[0], int(q.get("n", ["10"])[0]))
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- Starlette ----------------------------------------------------------------------------------
def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def recommend(request: Request) -> Response:
        q = request.query_params
        return Response(_body(q.get("user", ""), int(q.get("n", "10"))),
                        media_type="application/json")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(routes=[Route("/recommend", recommend), Route("/healthz", healthz)])


# -- FastAPI ------------------------------------------------------------------------------------
def _fastapi() -> Any:
    from fastapi import FastAPI, Query
    from fastapi.responses import PlainTextResponse, Response

    app = FastAPI()

    @app.get("/recommend")
    async def recommend(user: str, n: int = Query(10, ge=1, le=1000)) -> Response:
        return Response(_body(user, n), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return app


starlette = _starlette()
fastapi = _fastapi()
