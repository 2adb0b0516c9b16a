"""Redis going back in time while workers run: a restart from an older RDB, an AOF restart
after kill -9, a promoted replica that lacked the last writes, a wipe during an in-flight
batch. Each fault is put at a chosen commit step (worker/faults.py), on a Redis of the test's
own, started by the project's devstack; the invariants of docs/exactly-once.md then hold."""

from __future__ import annotations

import signal
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, store_for, synthetic_events
from tests.test_system_of_record import wipe
from tests.test_worker_stream import assert_redis_equals, reference_model
from worker import faults
from worker.config import Settings
from worker.devstack import Stack, StackConfig
from worker.devstack.proxy import TcpProxy
from worker.metrics import WorkerMetrics
from worker.runtime.loop import Worker
from worker.stores.redis.store import dump_vectors

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


def _free_port() -> int:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A Redis (and optionally its replica) of one test, run by the project's devstack."""

    def __init__(self, root: Path, persistence: str) -> None:
        self.port, self.replica_port = _free_port(), _free_port()
        self.stack = Stack(StackConfig.from_env(
            runtime_dir=root, redis_port=self.port, redis_replica_port=self.replica_port,
            redis_persistence=persistence, redis_save=""))

    def client(self, port: int | None = None) -> redis.Redis:
        return redis.Redis(port=port or self.port, socket_timeout=10)

    def crash(self) -> None:
        """kill -9 of redis-server: what was not persisted is gone."""
        self.stack.server("redis").kill()

    def crash_and_restart(self) -> None:
        """kill -9, then start again from the RDB or AOF it persisted."""
        self.crash()
        self.restart()

    def restart(self) -> None:
        """Start it again from whatever it persisted (the devstack finds the stale PID)."""
        self.stack.up(["redis"])

    def down(self) -> None:
        self.stack.down(["redis", "redis-replica"])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[str], PrivateRedis]]:
    made: list[PrivateRedis] = []

    def start(persistence: str, replica: bool = False) -> PrivateRedis:
        r = PrivateRedis(tmp_path / f"stack{len(made)}", persistence)
        r.stack.up(["redis", "redis-replica"] if replica else ["redis"])
        made.append(r)
        return r

    yield start  # type: ignore[misc]
    faults.disarm()
    for r in made:
        r.down()


def settings_on(stack: StackInfo, isolated: Isolated, port: int, partitions: int) -> Settings:
    return make_settings(stack, isolated, **{
        "redis.port": port, "kafka.partitions": partitions, "model.rank": 8,
        "worker.batch_max_events": 200, "redis.socket_timeout_s": 1.0,
        "worker.redis_retry_budget_s": 60.0, "worker.reconnect_backoff_max_s": 0.2,
        "kafka.session_timeout_ms": 6000})


def run_workers(settings: Settings, n: int, timeout_s: float = 180.0) -> list[Worker]:
    """``n`` workers of one group until the stream is drained (idle for 4 s)."""
    workers = [Worker(settings) for _ in range(n)]
    threads = [threading.Thread(target=w.run, kwargs={"idle_exit_s": 4.0}, daemon=True)
               for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    alive = [t for t in threads if t.is_alive()]
    for w in workers:
        w.stop()
    for t in threads:
        t.join(30)
    assert not alive, "a worker never went idle: a partition was left unconsumed"
    return workers


def assert_invariants(settings: Settings, events: list[dict[str, object]], partitions: int,
                      exact: bool) -> None:
    """Σ item n == accepted events (per item too); every checkpoint == its end offset, none
    pending; users and items == the ids produced; no NaN; with ``exact`` (one partition) every
    f, b and a bit-identical to an uninterrupted run."""
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "probe"})
    ends = {p: probe.get_watermark_offsets(TopicPartition(settings.kafka.topic, p))[1]
            for p in range(partitions)}
    probe.close()
    cps = store.read_checkpoints(version, settings.kafka.topic, list(range(partitions)))
    assert {p: cp.offset for p, cp in cps.items()} == ends
    assert not any(cp.has_pending for cp in cps.values())
    rank = settings.model.rank
    items, users = dump_vectors(store, version, "i", rank), dump_vectors(store, version, "u", rank)
    counts = {i: int(store.client.hget(store.keys.item(version, i), "n") or 0)  # type: ignore[arg-type]
              for i in items.id_list()}
    assert sum(counts.values()) == len(events), "events lost or applied twice"
    assert set(users.id_list()) == {str(e["user_id"]) for e in events}
    assert set(items.id_list()) == {str(e["item_id"]) for e in events}
    assert counts == Counter(str(e["item_id"]) for e in events)
    for side in (items, users):
        assert np.isfinite(side.vectors).all() and np.isfinite(side.biases).all()
    if exact:
        assert_redis_equals(settings, reference_model(settings, events))


def on_commits(plan: dict[int, Callable[[], None]]) -> dict[int, Callable[[], None]]:
    """Run ``plan[n]`` inside the worker right after its n-th commit step returned (before it
    moves its positions): the fault lands at a chosen step, not at a random moment."""
    def at(n: int) -> None:
        if n in plan:
            plan.pop(n)()
    faults.arm("after_commit", at, nth=None)
    return plan  # empty once every fault ran


@pytest.mark.parametrize(("partitions", "n_workers"), [(1, 1), (4, 2)])
def test_restart_from_an_older_rdb_while_workers_run_replays_exactly(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis],
        partitions: int, n_workers: int) -> None:
    r = private_redis("rdb")
    settings = settings_on(stack, isolated, r.port, partitions)
    events = synthetic_events(6000, 400, 200, seed=21)
    produce(settings, events, partitions=partitions)


    plan = on_commits({5: lambda: r.client().save(), 18: r.crash_and_restart})
    workers = run_workers(settings, n_workers)
    assert not plan, "the stream ended before every fault ran"
    assert_invariants(settings, events, partitions, exact=partitions == 1)
    assert sum(w.commit.regressions_total for w in workers) >= 1, "the regression went unseen"


def test_aof_everysec_restart_after_kill_9_keeps_every_event(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis]) -> None:
    r = private_redis("aof")
    settings = settings_on(stack, isolated, r.port, 1)
    events = synthetic_events(5000, 400, 200, seed=22)
    produce(settings, events)


    plan = on_commits({12: r.crash_and_restart})
    run_workers(settings, 1)
    assert not plan
    assert_invariants(settings, events, 1, exact=True)


def test_replica_promoted_without_the_masters_last_writes_replays_exactly(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis]) -> None:
    r = private_redis("none", replica=True)
    proxy = TcpProxy(r.port)  # the address clients use; a failover points it elsewhere
    try:
        replica = r.client(r.replica_port)
        settings = settings_on(stack, isolated, proxy.port, 1)
        events = synthetic_events(6000, 400, 200, seed=23)
        produce(settings, events)

        def cut_replication() -> None:
            # the replica stops receiving the master's stream here: what the master
            # acknowledges from now on is unreplicated, like a lagging async replica's
            replica.execute_command("REPLICAOF", "NO", "ONE")

        def fail_over() -> None:
            r.crash()  # the master dies with its unreplicated writes
            proxy.retarget(r.replica_port)  # the promoted replica serves the address

        assert wait_replicated(r)
        plan = on_commits({6: cut_replication, 16: fail_over})
        workers = run_workers(settings, 1)
        assert not plan
        assert_invariants(settings, events, 1, exact=True)
        assert workers[0].commit.regressions_total >= 1
    finally:
        proxy.close()


def wait_replicated(r: PrivateRedis, timeout_s: float = 20.0) -> bool:
    from tests.streaming import wait_for

    replica = r.client(r.replica_port)
    return wait_for(lambda: replica.info("replication").get("master_link_status") == "up",
                    timeout_s=timeout_s)


def test_wipe_during_an_in_flight_batch_neither_strands_nor_double_applies(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis]) -> None:
    r = private_redis("none")
    settings = settings_on(stack, isolated, r.port, 1)
    events = synthetic_events(5000, 400, 200, seed=24)
    produce(settings, events)
    store = store_for(settings)
    # the 10th batch's intent is in Redis, its writes not sent yet: Redis loses everything
    faults.arm("after_intent", lambda: wipe(store), nth=10)
    workers = run_workers(settings, 1)
    assert_invariants(settings, events, 1, exact=True)
    assert workers[0].losses >= 1


def test_a_fenced_partition_the_group_still_assigns_is_taken_back(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis]) -> None:
    """A foreign owner token written under a running worker (what a zombie's late `own`
    leaves): the worker is fenced, but the group still assigns it the partition, so it takes
    it back instead of leaving it unconsumed."""
    r = private_redis("none")
    settings = settings_on(stack, isolated, r.port, 1)
    events = synthetic_events(4000, 300, 150, seed=25)
    produce(settings, events)
    store = store_for(settings)

    def foreign_owner() -> None:
        version = store.current_version()
        store.client.hset(store.keys.checkpoint(version, settings.kafka.topic, 0),  # type: ignore[arg-type]
                          "owner", "a-zombie")
    metrics = WorkerMetrics()
    server = metrics.serve("127.0.0.1", 0)
    readyz: list[tuple[str, int]] = []

    def probe(when: str) -> None:
        try:
            code = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz").status
        except urllib.error.HTTPError as exc:
            code = exc.code
        readyz.append((when, code))

    faults.arm("after_intent", foreign_owner, nth=8)
    faults.arm("after_fence", lambda: probe("fenced"))
    plan = on_commits({12: lambda: probe("taken back")})
    worker = Worker(settings, metrics, server)
    thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": 4.0}, daemon=True)
    thread.start()
    thread.join(180)
    assert not thread.is_alive() and not plan
    assert_invariants(settings, events, 1, exact=True)
    assert worker.commit.fenced_total >= 1
    # unready while the fenced partition is not consumed, ready again once taken back
    assert readyz == [("fenced", 503), ("taken back", 200)]


def test_a_stall_past_the_socket_timeout_logs_one_line_and_one_on_recovery(
        stack: StackInfo, isolated: Isolated, private_redis: Callable[..., PrivateRedis],
        caplog: pytest.LogCaptureFixture) -> None:
    r = private_redis("none")
    settings = settings_on(stack, isolated, r.port, 1)
    events = synthetic_events(3000, 300, 150, seed=26)
    produce(settings, events)
    server = r.stack.server("redis")

    def stall() -> None:
        server.kill(signal.SIGSTOP)
        threading.Timer(4.0, lambda: server.kill(signal.SIGCONT)).start()

    plan = on_commits({5: stall})
    with caplog.at_level("WARNING", logger="online_als.worker"):
        run_workers(settings, 1)
    assert not plan
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum("stalled" in m or "unavailable:" in m for m in lines) == 1, lines
    assert sum(" is back after " in m for m in lines) == 1, lines
    assert_invariants(settings, events, 1, exact=True)
