"""The worker on a real Redis Cluster (3 masters): scripts touch one hash slot per call."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Isolated, StackInfo, make_settings, unavailable
from tests.streaming import produce, run_worker, synthetic_events
from tests.test_worker_stream import reference_model

pytestmark = pytest.mark.stack


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: list[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 50000)
        if port not in taken and _is_free(port) and _is_free(port + 10000):
            return port


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis-server is missing (online-als stack up installs it)")
    root = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    for _ in range(3):
        ports.append(_free_port(ports))
    procs = []
    for port in ports:
        d = Path(root, str(port))
        d.mkdir()
        procs.append(subprocess.Popen([
            server, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"), "--save", "", "--appendonly", "no",
            "--dir", str(d)], stdout=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(subprocess.run(["redis-cli", "-p", str(p), "ping"], capture_output=True,
                                  text=True).stdout.strip() == "PONG" for p in ports):
                break
            time.sleep(0.1)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                                  capture_output=True, text=True).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.2)
        yield ports[0]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def test_worker_on_a_redis_cluster_equals_the_in_memory_model(
        stack: StackInfo, isolated: Isolated, redis_cluster: int) -> None:
    import numpy as np

    from worker.stores.redis.store import RedisStore, dump_vectors

    settings = make_settings(stack, isolated, **{"redis.cluster": True, "redis.port": redis_cluster,
                                                  "model.rank": 8, "worker.batch_max_events": 300})
    events = synthetic_events(2000, 200, 100, seed=41)
    produce(settings, events)
    worker = run_worker(settings, idle_exit_s=3)
    assert worker.applied_total == len(events)
    store = RedisStore.from_settings(settings.redis)
    version = store.current_version()
    assert version is not None
    model = reference_model(settings, events)
    for kind, idmap, factors in (("u", model.state.users, model.state.user_factors),
                                 ("i", model.state.items, model.state.item_factors)):
        got = dump_vectors(store, version, kind, settings.model.rank)
        assert got.ids == sorted(idmap.ids)
        np.testing.assert_array_equal(got.vectors, factors[idmap.rows_for(got.ids, add=False)])
    cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
    assert cp.offset == len(events)


def test_a_worker_killed_between_its_writes_and_its_commit_on_a_cluster_recovers_exactly(
        stack: StackInfo, isolated: Isolated, redis_cluster: int) -> None:
    """The cluster commits strictly after its writes: a kill -9 at the fault point between
    them (every write of the batch returned on every node, the checkpoint not sent) leaves
    the intent pending, and the next worker recovers it; then every field (f, b, a, n, the
    seen-hashes) equals the in-memory model's."""
    import sys
    from collections import Counter

    from tests.streaming import store_for
    from tests.test_worker_stream import assert_redis_equals
    from worker.config import environ_for
    from worker.faults import FAULT_ENV

    settings = make_settings(stack, isolated, **{"redis.cluster": True, "redis.port": redis_cluster,
                                                  "model.rank": 8, "worker.batch_max_events": 300})
    events = synthetic_events(3000, 250, 120, seed=42)
    produce(settings, events)
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server", "--log-level",
           "WARNING", "--idle-exit", "3"]
    dying = subprocess.run(cmd, env={**environ_for(settings), FAULT_ENV: "after_writes@4"},
                           timeout=180)
    assert dying.returncode == -9  # killed by the fault hook, not finished
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
    assert cp.has_pending and cp.offset is not None and cp.pending_end is not None
    assert cp.offset < cp.pending_end + 1 < len(events)  # writes landed, commit did not
    assert subprocess.run(cmd, env=environ_for(settings), timeout=180).returncode == 0
    cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
    assert cp.offset == len(events) and not cp.has_pending
    assert_redis_equals(settings, reference_model(settings, events))  # f, b, a bit for bit
    n = {i: int(store.client.hget(store.keys.item(version, i), "n") or 0)
         for i in {str(e["item_id"]) for e in events}}
    assert n == Counter(str(e["item_id"]) for e in events)
    pairs: dict[str, set[str]] = {}
    for e in events:
        pairs.setdefault(str(e["user_id"]), set()).add(str(e["item_id"]))
    for user, items in pairs.items():
        seen = store.client.hkeys(store.keys.seen(version, user))
        assert {s.decode() for s in seen} == items, user
