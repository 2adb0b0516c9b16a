"""``online-als serve`` on the real stack (issue 25 item 1): two worker processes behind one
port answer exactly what ServingClient answers (a known user, an anonymous one, because,
similar, popular, with filters; GET and POST), from Node's built-in fetch too; they follow a
version switch and an attribute update while serving; /healthz, /readyz, /metrics (summed over
the processes) and an OpenAPI description that lists exactly the app's routes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_als.factors import Factors, ModelArrays
from tests.conftest import Isolated, StackInfo, make_settings, unavailable
from tests.streaming import store_for
from worker.config import Settings, load_config
from worker.serving.api.app import create_app
from worker.serving.api.metrics import SERVE_METRIC_NAMES
from worker.serving.api.openapi import OPENAPI
from worker.serving.attributes import write_attributes
from worker.serving.client import ItemFilters, Recommendations, ServingClient
from worker.stores.redis.bulk_load import load_version
from worker.stores.redis.store import connect

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
RANK, N_ITEMS, N_USERS = 8, 300, 40
ITEMS = [f"m{j}" for j in range(N_ITEMS)]
USERS = [f"u{j}" for j in range(N_USERS)]


def _model(seed: int) -> ModelArrays:
    rng = np.random.default_rng(seed)
    return ModelArrays("explicit",
                       Factors(USERS, rng.normal(size=(N_USERS, RANK)).astype(np.float32),
                               rng.normal(scale=0.2, size=N_USERS).astype(np.float32)),
                       Factors(ITEMS, rng.normal(size=(N_ITEMS, RANK)).astype(np.float32),
                               rng.normal(scale=0.2, size=N_ITEMS).astype(np.float32)), 3.5)


def load_model(settings: Settings, seed: int) -> int:
    store = store_for(settings)
    version = store.allocate_version()
    rows = [[(7 * u + k) % N_ITEMS for k in range(5)] for u in range(N_USERS)]
    seen = (np.cumsum([0] + [len(r) for r in rows]), np.concatenate(rows),
            np.full(5 * N_USERS, 4.0))
    load_version(store, version, _model(seed), item_counts=(np.arange(N_ITEMS) * 7) % 101 + 1,
                 source="test", seen=seen)
    assert store.compare_and_switch(store.current_version(), version, "test", "test_serving_http")
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw, status, ctype = resp.read(), resp.status, resp.headers["content-type"]
    except urllib.error.HTTPError as exc:
        raw, status, ctype = exc.read(), exc.code, exc.headers["content-type"]
    return status, json.loads(raw) if "json" in (ctype or "") else raw.decode()


def wait_until(pred: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


class Server:
    def __init__(self, settings: Settings, workers: int = 2) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        r = settings.redis
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli.main", "serve", "--port", str(self.port),
             "--workers", str(workers), "--set", f"redis.host={r.host}", "--set",
             f"redis.port={r.port}", "--set", f"redis.key_prefix={r.key_prefix}",
             "--set", "serve.refresh_s=0.2", "--log-level", "WARNING"], cwd=ROOT)
        ok = wait_until(lambda: self.proc.poll() is not None or self._healthy(), 60)
        assert ok and self.proc.poll() is None, "online-als serve did not start"

    def _healthy(self) -> bool:
        try:
            return http(self.base + "/healthz")[0] == 200
        except OSError:
            return False

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        from urllib.parse import urlencode

        return http(f"{self.base}{path}?{urlencode(params, doseq=True)}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture(scope="module")
def served(stack: StackInfo) -> Iterator[tuple[Settings, Server]]:
    tag = f"http_{uuid.uuid4().hex[:8]}"
    iso = Isolated(tag, f"t_{tag}", f"t_{tag}.dlq", f"test_{tag}", f"ks_{tag}", f"g_{tag}")
    settings = make_settings(stack, iso, **{"model.mode": "explicit", "model.rank": RANK})
    load_model(settings, seed=1)
    r = connect(settings.redis)
    write_attributes(r, store_for(settings).keys, "category",
                     {i: ["even" if j % 2 == 0 else "odd"] for j, i in enumerate(ITEMS)})
    server = Server(settings)
    assert wait_until(lambda: server.get("/readyz")[0] == 200)
    yield settings, server
    server.stop()
    keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


def as_json(recs: Recommendations) -> dict[str, Any]:
    return {"version": recs.version, "source": recs.source,
            "items": [{"id": i, "score": s} for i, s in recs]}


def test_http_answers_what_the_client_answers(served: tuple[Settings, Server]) -> None:
    settings, srv = served
    client = ServingClient.from_settings(settings)
    odd = ItemFilters(categories=["odd"], exclude=["m1", "m3"])
    for user in [*USERS[:15], "nobody"]:
        assert srv.get("/v1/recommend", user=user, n=7) == (200, as_json(client.recommend(user, 7)))
        assert srv.get("/v1/recommend", user=user, n=5, category="odd", exclude="m1,m3") == (
            200, as_json(client.recommend(user, 5, filter=odd)))
        assert http(srv.base + "/v1/recommend", {"user": user, "n": 5, "categories": ["odd"],
                                                 "exclude": ["m1", "m3"]}) == \
            (200, as_json(client.recommend(user, 5, filter=odd)))
        assert srv.get("/v1/recommend", user=user, n=4, include_seen="true") == (
            200, as_json(client.recommend(user, 4, exclude_seen=False)))
    _, body = srv.get("/v1/recommend", user="u1", n=5, category="odd")
    assert all(int(r["id"][1:]) % 2 == 1 for r in body["items"])
    assert srv.get("/v1/recommend", items="m5:5,m9:4", n=6) == (
        200, as_json(client.recommend_for_new_user({"m5": 5.0, "m9": 4.0}, 6)))
    assert http(srv.base + "/v1/recommend", {"items": {"m5": 5, "m9": 4}, "n": 6})[1] == \
        as_json(client.recommend_for_new_user({"m5": 5.0, "m9": 4.0}, 6))
    assert srv.get("/v1/similar", item="m10", n=5, include="m1,m2,m3,m4") == (
        200, as_json(client.similar_items("m10", 5, filter=ItemFilters(include=["m1", "m2", "m3",
                                                                             "m4"]))))
    assert srv.get("/v1/popular", n=5, exclude_category="odd") == (
        200, as_json(client.popular(5, filter=ItemFilters(exclude_categories=["odd"]))))
    top = client.recommend("u2", 1).item_ids[0]
    status, why = srv.get("/v1/because", user="u2", item=top, n=3)
    assert status == 200 and [[r["id"], r["score"]] for r in why["items"]] == \
        [list(p) for p in client.because("u2", top, 3)]


def test_bad_requests_are_400_with_the_reason(served: tuple[Settings, Server]) -> None:
    _, srv = served
    for params, says in [({}, "missing parameter 'user'"), ({"user": "u1", "n": "x"}, "integer"),
                         ({"user": "u1", "n": 5000}, "between 1 and 1000"),
                         ({"user": "u1", "items": "m1"}, "either 'user'"),
                         ({"user": "u1", "attr": "nocolon"}, "NAME:VALUE"),
                         ({"user": "u1", "include_seen": "maybe"}, "true or false"),
                         ({"items": "m1:lots"}, "'items'")]:
        status, body = srv.get("/v1/recommend", **params)
        assert status == 400 and says in body["error"], (params, body)
    assert srv.get("/v1/similar")[0] == 400
    assert http(srv.base + "/v1/recommend", [1, 2])[0] == 400
    assert srv.get("/no/such/route")[0] == 404


def test_follows_a_version_switch_and_attribute_updates(served: tuple[Settings, Server]) -> None:
    settings, srv = served
    client = ServingClient.from_settings(settings, refresh_s=0)
    old = srv.get("/readyz")[1]["version"]
    new = load_model(settings, seed=2)
    assert new != old
    # every process (requests land on either) serves the new version within a few refreshes
    assert wait_until(lambda: all(srv.get("/v1/recommend", user="u3")[1]["version"] == new
                                  for _ in range(20)), 15)
    assert srv.get("/v1/recommend", user="u3", n=5)[1] == as_json(client.recommend("u3", 5))
    write_attributes(connect(settings.redis), store_for(settings).keys, "category",
                     {"m0": ["odd"]})  # m0 was even; now odd only

    def moved() -> bool:
        return all("m0" in [r["id"] for r in srv.get("/v1/popular", n=N_ITEMS,
                                                     category="odd")[1]["items"]]
                   for _ in range(10))

    assert wait_until(moved, 15)


def test_health_readiness_metrics_and_openapi(served: tuple[Settings, Server]) -> None:
    _, srv = served
    assert srv.get("/healthz") == (200, "ok\n")
    status, ready = srv.get("/readyz")
    assert status == 200 and ready["state"] == "ready" and ready["items"] == N_ITEMS
    for _ in range(30):
        srv.get("/v1/popular", n=3)
    _, text = srv.get("/metrics")
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert set(SERVE_METRIC_NAMES) <= names, set(SERVE_METRIC_NAMES) - names
    popular = [line for line in text.splitlines()
               if line.startswith('online_als_serve_requests_total{endpoint="popular",status="200"}')]
    assert popular and float(popular[0].split()[-1]) >= 30  # summed over both processes
    status, doc = srv.get("/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(OPENAPI))


def test_openapi_lists_exactly_the_routes() -> None:
    app = create_app(load_config(environ={}), start_refresher=False)
    routes = {r.path: set(r.methods or ()) - {"HEAD"} for r in app.routes}  # type: ignore[attr-defined]
    described = {p: {m.upper() for m in ops} for p, ops in OPENAPI["paths"].items()}
    assert routes == described


def test_not_ready_without_a_model_then_ready(stack: StackInfo) -> None:
    tag = f"httpempty_{uuid.uuid4().hex[:8]}"
    iso = Isolated(tag, f"t_{tag}", f"t_{tag}.dlq", f"test_{tag}", f"ks_{tag}", f"g_{tag}")
    settings = make_settings(stack, iso, **{"model.mode": "explicit", "model.rank": RANK})
    srv = Server(settings, workers=1)
    try:
        status, ready = srv.get("/readyz")
        assert status == 503 and ready["state"] == "no_model"
        status, body = srv.get("/v1/recommend", user="u1")
        assert status == 503 and "no model version" in body["error"]
        load_model(settings, seed=3)
        assert wait_until(lambda: srv.get("/readyz")[0] == 200, 15)
        assert srv.get("/v1/recommend", user="u1")[1]["source"] == "model"
    finally:
        srv.stop()
        r = connect(settings.redis)
        keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
        if keys:
            r.delete(*keys)


def test_node_fetch_reads_the_api(served: tuple[Settings, Server]) -> None:
    """A Node.js app with nothing but the built-in fetch (examples/http-client)."""
    settings, srv = served
    node = shutil.which("node")
    if node is None:
        unavailable("node not found on PATH: the HTTP client test needs Node.js >= 18")
    assert node is not None
    done = subprocess.run([node, "recommend.mjs", srv.base, "u4", "6", "odd"],
                          cwd=ROOT / "examples" / "http-client", capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert done.returncode == 0, done.stderr
    calls = {c.pop("call"): c for c in map(json.loads, done.stdout.splitlines())}
    client = ServingClient.from_settings(settings)
    top = client.recommend("u4", 6)
    assert calls["recommend"] == as_json(top)
    assert calls["recommend_category"] == as_json(
        client.recommend("u4", 6, filter=ItemFilters(categories=["odd"])))
    assert calls["anonymous"] == as_json(
        client.recommend_for_new_user({i: 5.0 for i in top.item_ids[:2]}, 6))
    assert calls["similar"] == as_json(client.similar_items(top.item_ids[0], 6))
    assert calls["popular"] == as_json(client.popular(6))
    assert [[r["id"], r["score"]] for r in calls["because"]["items"]] == \
        [list(p) for p in client.because("u4", top.item_ids[0], 5)]


def test_async_user_read_matches_and_falls_back(served: tuple[Settings, Server]) -> None:
    """The asynchronous user read gives what the blocking one gives; a Redis it cannot reach
    (or a refused AUTH) sends the request through the blocking client instead."""
    import asyncio

    from pydantic import SecretStr

    from worker.serving.api.aio_reads import AsyncUserReads

    settings, _ = served
    client = ServingClient.from_settings(settings)
    cache = client.cache()

    async def reads(s: Settings) -> list[Any]:
        aio = AsyncUserReads(s.redis, client.keys, client.reads)
        got = await asyncio.gather(*(aio.user_seen_rows(cache, u) for u in [*USERS[:10], "x"]))
        return list(got)

    want = [client.read_user_seen_rows(cache, u) for u in [*USERS[:10], "x"]]
    broken = settings.model_copy(update={"redis": settings.redis.model_copy(
        update={"port": free_port()})})
    refused = settings.model_copy(update={"redis": settings.redis.model_copy(
        update={"password": SecretStr("wrong"), "username": "nobody"})})
    for s in (settings, broken):
        for (ru, rows), (wu, wrows) in zip(asyncio.run(reads(s)), want, strict=True):
            assert rows.tolist() == wrows.tolist() and ru.bias == wu.bias
            assert (ru.vector is None) == (wu.vector is None)
            if ru.vector is not None:
                assert ru.vector.tobytes() == wu.vector.tobytes()  # type: ignore[union-attr]
    assert asyncio.run(reads(refused))[0][1].tolist() == want[0][1].tolist()


def test_local_stack_component_starts_the_service(stack: StackInfo, tmp_path: Path) -> None:
    """`online-als stack up --with serving`: a stack of its own (runtime dir, port) whose only
    component is the service, over the test stack's Redis; up, answering, down."""
    from worker.devstack import Stack, StackConfig

    port = free_port()
    st = Stack(StackConfig.from_env(runtime_dir=tmp_path / "stack", serving_port=port,
                                    redis_port=stack.redis_port, serving_workers=2))
    try:
        reports = st.up(["serving"])
        assert reports["serving"].started
        assert st.status(["serving"])["serving"].running
        assert http(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert http(f"http://127.0.0.1:{port}/readyz")[0] in (200, 503)  # ready once a model
    finally:
        assert st.down(["serving"]) == ["serving"]
    assert not st.status(["serving"])["serving"].running
