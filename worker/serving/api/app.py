"""The Starlette app of ``online-als serve``: HTTP over :class:`ServingClient`.

Handlers call the client directly on the event loop (no thread pool: a recommend is ~0.3 ms of
CPU, and a hop to a thread costs more than it saves; concurrency comes from ``serve.workers``
processes behind the one port). The user read of a recommend is asynchronous
(:mod:`worker.serving.api.aio_reads`), so a process scores one request while the next one's
Redis round trip is in flight. The pointer ``<P>:current``, the item
cache and the attribute sets are refreshed by one background thread per process every
``serve.refresh_s``, so no request pays for a reload; a version switch is served within
``refresh_s``.

>>> from worker.config import load_config
>>> app = create_app(load_config(environ={}), start_refresher=False)
>>> sorted(r.path for r in app.routes)[:3]
['/healthz', '/metrics', '/openapi.json']
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from worker.config import Settings
from worker.serving.api.aio_reads import AsyncUserReads
from worker.serving.api.metrics import ServeMetrics
from worker.serving.api.openapi import OPENAPI
from worker.serving.api.params import BadRequest, Query
from worker.serving.cache import NoModelError, Recommendations
from worker.serving.client import ServingClient

log = logging.getLogger("online_als.serve")
_JSON = "application/json"


class ServeState(enum.Enum):
    """What ``/readyz`` reports."""

    STARTING = "starting"
    READY = "ready"
    NO_MODEL = "no_model"  # <P>:current does not exist yet
    REDIS_DOWN = "redis_down"


class Service:
    """One process's client, refresher thread and metrics."""

    def __init__(self, settings: Settings, client: ServingClient | None = None) -> None:
        s = settings.serve
        self.settings = settings
        self.client = client or ServingClient.from_settings(
            settings, refresh_s=math.inf, reload_items_s=s.reload_items_s)
        self.client.attributes.refresh_s = math.inf  # the refresher thread re-checks them
        self.aio = AsyncUserReads(settings.redis, self.client.keys, self.client.reads)
        self.metrics = ServeMetrics()
        self.state = ServeState.STARTING
        self.detail = "starting"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh_once(self) -> None:
        """Pointer, items and (once used) attributes; sets :attr:`state`."""
        try:
            cache = self.client.refresh()
            if self.client.attributes.loaded is not None:
                self.client.attributes.refresh()
        except NoModelError as exc:
            self.state, self.detail = ServeState.NO_MODEL, str(exc)
            return
        except (redis.RedisError, OSError) as exc:
            self.state, self.detail = ServeState.REDIS_DOWN, f"Redis: {exc}"
            return
        if self.state is not ServeState.READY and len(cache):
            # compile/load the numba kernels before the first request does
            self.client.recommend_for_new_user({cache.id_list[0]: 1.0}, n=10)
        self.state, self.detail = ServeState.READY, "ready"
        self.metrics.model_version.set(cache.version)
        self.metrics.items.set(len(cache))
        attrs = self.client.attributes.loaded
        self.metrics.attribute_serial.set(attrs.serial if attrs is not None else 0)

    def start(self) -> None:
        self.refresh_once()

        def loop() -> None:
            while not self._stop.wait(self.settings.serve.refresh_s):
                try:
                    self.refresh_once()
                except Exception:  # noqa: BLE001 - the thread must outlive one bad refresh
                    log.exception("refresh failed; serving what is loaded")

        self._thread = threading.Thread(target=loop, name="serve-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)


def _results(recs: Recommendations) -> Response:
    return Response(orjson.dumps({"version": recs.version, "source": recs.source,
                                  "items": [{"id": i, "score": s} for i, s in recs]}),
                    media_type=_JSON)


Handler = Callable[[Service, Query], Awaitable[Response]]


def _endpoint(svc: Service, name: str, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    metrics = svc.metrics
    latency = metrics.latency.labels(name)
    counters: dict[int, Any] = {}

    async def endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            if request.method == "POST":
                try:
                    q = Query.from_json(orjson.loads(await request.body()))
                except orjson.JSONDecodeError as exc:
                    raise BadRequest(f"the body is not JSON: {exc}") from None
            else:
                q = Query.from_query_string(request.scope["query_string"])
            resp = await fn(svc, q)
        except BadRequest as exc:
            resp = _json({"error": str(exc)}, 400)
        except NoModelError as exc:
            resp = _json({"error": str(exc)}, 503)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            resp = _json({"error": f"Redis is not reachable: {exc}"}, 503)
        except Exception as exc:  # noqa: BLE001 - one JSON 500 (counted), the traceback logged
            log.exception("%s failed", name)
            resp = _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)
        c = counters.get(resp.status_code)
        if c is None:
            c = counters[resp.status_code] = metrics.requests.labels(name, str(resp.status_code))
        c.inc()
        latency.observe(time.perf_counter() - t0)
        return resp

    return endpoint


def _n(svc: Service, q: Query, default: int = 10) -> int:
    return q.integer("n", default, 1, svc.settings.serve.max_n)


async def recommend(svc: Service, q: Query) -> Response:
    limit = svc.settings.serve.max_ids
    flt = q.filters(limit)
    user = q.text("user", required=False)
    if user is not None and "items" in q.values:
        raise BadRequest("give either 'user' (a known user) or 'items' (an anonymous one)")
    if user is None:
        if "items" not in q.values:
            raise BadRequest("missing parameter 'user' (or 'items' for an anonymous user)")
        try:
            return _results(svc.client.recommend_for_new_user(q.ratings("items", limit),
                                                              _n(svc, q), filter=flt))
        except ValueError as exc:  # a value that is neither a number nor an event name
            raise BadRequest(f"'items': {exc}") from None
    n = _n(svc, q)
    if q.flag("include_seen"):
        return _results(svc.client.recommend(user, n, exclude_seen=False, filter=flt))
    cache = svc.client.cache()
    record, seen = await svc.aio.user_seen_rows(cache, user)  # scores others meanwhile
    return _results(svc.client.recommend_user(cache, record, seen, n, flt))


async def because(svc: Service, q: Query) -> Response:
    user, item = q.text("user"), q.text("item")
    assert user is not None and item is not None
    cache = svc.client.cache()
    pairs = svc.client.because(user, item, _n(svc, q, 5))
    return _json({"version": cache.version, "source": "model",
                  "items": [{"id": i, "score": s} for i, s in pairs]})


async def similar(svc: Service, q: Query) -> Response:
    item = q.text("item")
    assert item is not None
    return _results(svc.client.similar_items(item, _n(svc, q),
                                             filter=q.filters(svc.settings.serve.max_ids)))


async def popular(svc: Service, q: Query) -> Response:
    return _results(svc.client.popular(_n(svc, q), filter=q.filters(svc.settings.serve.max_ids)))


def create_app(settings: Settings, client: ServingClient | None = None, *,
               start_refresher: bool = True) -> Starlette:
    """The app for ``settings`` (``client``: an existing client, e.g. in tests)."""
    svc = Service(settings, client)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready = svc.state is ServeState.READY
        cache = svc.client._cache
        return _json({"state": svc.state.value, "detail": svc.detail,
                      "version": cache.version if cache is not None else None,
                      "items": len(cache) if cache is not None else 0}, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(svc.metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    openapi_body = orjson.dumps(OPENAPI)

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type=_JSON)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_refresher:
            svc.start()
        yield
        svc.stop()

    routes = [Route("/v1/recommend", _endpoint(svc, "recommend", recommend),
                    methods=["GET", "POST"]),
              Route("/v1/because", _endpoint(svc, "because", because)),
              Route("/v1/similar", _endpoint(svc, "similar", similar)),
              Route("/v1/popular", _endpoint(svc, "popular", popular)),
              Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
              Route("/openapi.json", openapi)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = svc
    return app


def app_from_env() -> Starlette:
    """The uvicorn factory of each worker process: settings from the same ``--config`` and
    ``--set`` flags the CLI got (handed over in ``ONLINE_ALS_SERVE_ARGS``)."""
    import os

    from worker.config import load_config, parse_set_flags

    args = orjson.loads(os.environ.get("ONLINE_ALS_SERVE_ARGS", "{}"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    return create_app(load_config(args.get("config"), parse_set_flags(args.get("set", []))))
