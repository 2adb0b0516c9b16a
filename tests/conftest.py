"""Test harness: one real local stack per session, isolated names per test.

The ``stack`` fixture uses the running stack (``online-als stack up``), starting it when it
is not up. With ``CI=true`` an unreachable server fails the run; it never skips.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.config import Settings, load_config

IN_CI = os.environ.get("CI", "").lower() == "true"
CORE = ("redis", "kafka", "cassandra")


@dataclass(frozen=True)
class StackInfo:
    host: str
    kafka_port: int
    redis_port: int
    cassandra_port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"


def unavailable(message: str) -> None:
    """Fail under CI, skip (loudly) elsewhere."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_module(name: str) -> Any:
    """Import an optional dependency; a missing one fails under CI, skips (loudly) elsewhere."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed ({exc}); `make test` installs it")
        raise


@pytest.fixture
def movielens() -> Path:
    """The MovieLens data root; missing data fails under CI, skips elsewhere."""
    from online_als.datasets import MovieLensNotFoundError, default_data_root

    try:
        return default_data_root()
    except MovieLensNotFoundError as exc:
        unavailable(f"MovieLens data not found: {exc}")
        raise


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    from worker.devstack import Stack, StackConfig

    cfg = StackConfig.from_env()
    st = Stack(cfg)
    started_here = False
    status = st.status(CORE)
    if not all(s.running for s in status.values()):
        try:
            st.up(CORE)
            started_here = True
        except Exception as exc:  # the message says which server and why
            unavailable(f"local stack could not be started: {exc}")
        status = st.status(CORE)
        down = [n for n, s in status.items() if not s.running]
        if down:
            unavailable(f"servers not running after stack up: {down}")
    yield StackInfo(cfg.host, cfg.kafka_port, cfg.redis_port, cfg.cassandra_port)
    if started_here and not os.environ.get("ONLINE_ALS_KEEP_STACK"):
        st.down(CORE)


@dataclass(frozen=True)
class Isolated:
    """Names unique to one test: topics, Redis prefix, Cassandra keyspace, consumer group."""

    tag: str
    topic: str
    dlq_topic: str
    redis_prefix: str
    keyspace: str
    group: str


@pytest.fixture
def isolated(request: pytest.FixtureRequest) -> Isolated:
    base = re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:20]
    tag = f"{base}_{uuid.uuid4().hex[:8]}"
    return Isolated(tag=tag, topic=f"t_{tag}", dlq_topic=f"t_{tag}.dlq",
                    redis_prefix=f"test_{tag}", keyspace=f"ks_{tag}"[:48], group=f"g_{tag}")


def make_settings(stack: StackInfo, iso: Isolated, **overrides: object) -> Settings:
    """Settings pointing at the test stack with the test's own names; ``section.key`` overrides."""
    base: dict[str, object] = {
        "kafka.bootstrap_servers": stack.bootstrap,
        "kafka.topic": iso.topic,
        "kafka.dead_letter_topic": iso.dlq_topic,
        "kafka.group_id": iso.group,
        "kafka.partitions": 1,
        "redis.host": stack.host,
        "redis.port": stack.redis_port,
        "redis.key_prefix": iso.redis_prefix,
        "cassandra.hosts": stack.host,
        "cassandra.port": stack.cassandra_port,
        "cassandra.keyspace": iso.keyspace,
        "cassandra.enabled": False,  # persistence tests turn it on
        "metrics.port": 0,
        "worker.batch_max_wait_ms": 50,
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(overrides=base, environ={})


@contextlib.contextmanager
def persisted_settings(stack: StackInfo, iso: Isolated, migrate: bool = True,
                       **overrides: object) -> Iterator[Settings]:
    """:func:`make_settings` with Cassandra on and the test's own keyspace (migrated unless
    ``migrate`` is False), dropped afterwards."""
    from worker.stores.cassandra.store import CassandraStore

    settings = make_settings(stack, iso, **{"cassandra.enabled": True, **overrides})
    if migrate:
        with CassandraStore(settings.cassandra) as cass:
            cass.migrate()
    try:
        yield settings
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


@pytest.fixture
def settings(stack: StackInfo, isolated: Isolated) -> Settings:
    return make_settings(stack, isolated)
