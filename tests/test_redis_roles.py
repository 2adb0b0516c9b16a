"""Least privilege in Redis (issue 23, item 3): the secure stack's roles, on its real Redis.

``online-als stack up --secure`` creates three ACL users (``worker.devstack.tls.REDIS_ROLES``):
``online_als`` (admin), ``online_als_worker`` and ``online_als_serving``. A real worker streams
events from the local stack's Kafka into the secure Redis as the worker role; the serving
client, its asynchronous user read and a recommendation then run as the serving role, whose
every write (a command, a write script, ``EVALSHA`` of the worker's scripts, a write inside
``EVAL_RO``) Redis refuses. The table in ``docs/operations.md`` (Roles) names these tests.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.conftest import Isolated, StackInfo, make_settings, unavailable
from tests.streaming import produce, run_worker, synthetic_events
from worker.config import Settings
from worker.devstack import Stack, StackConfig
from worker.devstack.secure import reload_redis_acl
from worker.devstack.tls import APP_USER, REDIS_ROLES, TlsMaterial

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

WORKER, SERVING = f"{APP_USER}_worker", f"{APP_USER}_serving"


@dataclass(frozen=True)
class SecureRedis:
    config: StackConfig
    tls: TlsMaterial


@pytest.fixture(scope="module")
def secure_redis() -> Iterator[SecureRedis]:
    """The secure stack's Redis only (TLS, ACL users); started here if it is not running."""
    cfg = StackConfig.secure_from_env()
    st = Stack(cfg)
    started_here = False
    if not st.status(["redis"])["redis"].running:
        try:
            st.up(["redis"])
            started_here = True
        except Exception as exc:  # the message says why
            unavailable(f"secure Redis could not be started: {exc}")
    else:  # started before the roles existed: its ACL file is rewritten and loaded
        reload_redis_acl(cfg)
    yield SecureRedis(cfg, TlsMaterial(cfg.runtime_dir / "tls"))
    if started_here and not os.environ.get("ONLINE_ALS_KEEP_STACK"):
        st.down(["redis"])


def _as(settings: Settings, sr: SecureRedis, user: str) -> Settings:
    """``settings`` with Redis = the secure one, logged in as ``user``."""
    from pydantic import SecretStr

    password = sr.tls.password(REDIS_ROLES[user][0])
    redis_settings = settings.redis.model_copy(update={
        "host": sr.config.host, "port": sr.config.redis_port, "tls": True,
        "tls_ca_file": str(sr.tls.ca), "username": user, "password": SecretStr(password)})
    return settings.model_copy(update={"redis": redis_settings})


def test_serving_role_reads_and_every_write_is_refused(
        stack: StackInfo, isolated: Isolated, secure_redis: SecureRedis) -> None:
    from worker.serving.api.aio_reads import AsyncUserReads
    from worker.serving.client import ServingClient
    from worker.stores.redis.store import RedisStore

    base = make_settings(stack, isolated, **{"model.rank": 8})
    worker_settings = _as(base, secure_redis, WORKER)
    events = synthetic_events(3000, 80, 60, seed=5)
    produce(worker_settings, events)
    worker = run_worker(worker_settings, idle_exit_s=3)  # the worker role writes the model
    assert worker.applied_total == 3000

    serving = _as(base, secure_redis, SERVING)
    client = ServingClient.from_settings(serving, refresh_s=0.0)
    cache = client.refresh()
    assert len(cache) > 0
    counts = collections.Counter(str(e["user_id"]) for e in events)
    user = min(counts, key=lambda u: (counts[u], u))  # one who has not seen every item
    recs = client.recommend(user, n=5)
    assert recs.source == "model" and len(recs) == 5, recs
    assert len(client.similar_items(cache.id_list[0], n=3)) == 3
    aio = AsyncUserReads(serving.redis, client.keys, client.reads)
    record, _ = asyncio.run(aio.user_seen_rows(cache, user))
    assert record.vector is not None

    r = RedisStore.from_settings(serving.redis).client
    key = client.keys.current()
    before = r.get(key)
    refused = {
        "SET": lambda: r.set(key, b"999"),
        "DEL": lambda: r.delete(key),
        "HSET": lambda: r.hset(client.keys.meta(cache.version), "mode", "x"),
        "EVAL write": lambda: r.eval("return redis.call('SET', KEYS[1], '999')", 1, key),
        "EVALSHA": lambda: r.evalsha("0" * 40, 1, key),
        "FLUSHDB": lambda: r.flushdb(),
    }
    for name, call in refused.items():
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
        assert r.get(key) == before, name
    with pytest.raises(redis.exceptions.ResponseError, match="(?i)write|can.t run this command"):
        r.execute_command("EVAL_RO", "return redis.call('SET', KEYS[1], '999')", 1, key)
    assert r.get(key) == before

    # the worker role writes data but administers nothing
    w = RedisStore.from_settings(worker_settings.redis).client
    for call in (lambda: w.flushdb(), lambda: w.config_get("*"), lambda: w.keys("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert w.get(key) == before
