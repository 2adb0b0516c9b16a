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


class _Cluster:
    """A 3-master cluster of one test, whose masters can be killed and restarted from their
    RDB files (``SAVE`` only when asked: ``--save ""``)."""

    def __init__(self, root: Path) -> None:
        self.server = shutil.which("redis-server") or "redis-server"
        self.root, self.ports, self.procs = root, [], {}  # type: ignore[var-annotated]
        for _ in range(3):
            self.ports.append(_free_port(self.ports))
        for port in self.ports:
            Path(root, str(port)).mkdir()
            self.start(port)
        _wait_pong(self.ports)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       capture_output=True, timeout=60)
        self.wait_ok()

    def start(self, port: int) -> None:
        d = Path(self.root, str(port))
        self.procs[port] = subprocess.Popen([
            self.server, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"), "--save", "", "--appendonly", "no",
            "--dir", str(d)], stdout=subprocess.DEVNULL)

    def kill_and_restart_from_rdb(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(10)
        self.start(port)
        _wait_pong([port])
        self.wait_ok()

    def wait_ok(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = all("cluster_state:ok" in subprocess.run(
                ["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True,
                text=True).stdout for p in self.ports)
            if ok:
                return
            time.sleep(0.2)
        raise AssertionError("the test cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait(10)


def _wait_pong(ports: list[int]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(subprocess.run(["redis-cli", "-p", str(p), "ping"], capture_output=True,
                              text=True).stdout.strip() == "PONG" for p in ports):
            return
        time.sleep(0.1)


def test_a_master_restarted_from_an_older_rdb_is_restored_from_cassandra(
        stack: StackInfo, isolated: Isolated, tmp_path: Path) -> None:
    """One shard goes back in time on its own (kill -9, restart from an older RDB) while the
    checkpoints on another node keep their place: not a consistent prefix, so the worker sees
    the master's new run_id before its next batch and restores from Cassandra; the end state
    is the uninterrupted run's, bit for bit, and every count exact."""
    import threading
    from collections import Counter

    import redis as redis_py

    from tests.streaming import store_for
    from tests.test_worker_stream import assert_redis_equals
    from worker import faults
    from worker.control.archive import Archiver
    from worker.runtime.loop import Worker
    from worker.stores.cassandra.store import CassandraStore

    if shutil.which("redis-server") is None:
        unavailable("redis-server is missing (online-als stack up installs it)")
    cluster = _Cluster(tmp_path)
    settings = make_settings(stack, isolated, **{
        "redis.cluster": True, "redis.port": cluster.ports[0], "model.rank": 8,
        "worker.batch_max_events": 200, "cassandra.enabled": True, "redis.socket_timeout_s": 1.0,
        "archive.snapshot_interval_s": 0, "worker.redis_retry_budget_s": 60.0})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        events = synthetic_events(4000, 300, 150, seed=43)
        produce(settings, events)
        store = store_for(settings)
        archiver = Archiver(settings)
        athread = threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 8}, daemon=True)
        athread.start()
        shard: list[int] = []

        def save_a_shard_without_the_checkpoint() -> None:
            version = store.current_version()
            node = store.client.get_node_from_key(  # type: ignore[attr-defined]
                store.keys.checkpoint(version, settings.kafka.topic, 0))  # type: ignore[arg-type]
            shard.append(next(p for p in cluster.ports if p != node.port))
            redis_py.Redis(port=shard[0]).save()

        plan = {4: save_a_shard_without_the_checkpoint,
                12: lambda: cluster.kill_and_restart_from_rdb(shard[0])}
        faults.arm("after_commit", lambda n: plan.pop(n)() if n in plan else None, nth=None)
        worker = Worker(settings)
        thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": 4.0}, daemon=True)
        thread.start()
        thread.join(180)
        athread.join(60)
        faults.disarm()
        assert not thread.is_alive() and not plan
        version = store.current_version()
        assert version is not None
        cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
        assert cp.offset == len(events) and not cp.has_pending
        n = {i: int(store.client.hget(store.keys.item(version, i), "n") or 0)
             for i in {str(e["item_id"]) for e in events}}
        assert sum(n.values()) == len(events), "events lost or applied twice"
        assert n == Counter(str(e["item_id"]) for e in events)
        assert_redis_equals(settings, reference_model(settings, events))
        assert worker.commit.regressions_total >= 1
    finally:
        faults.disarm()
        cluster.stop()
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()
