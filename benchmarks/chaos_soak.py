"""Chaos soak on the local stack: everything that can crash, crashes, and nothing is lost.

Streams N synthetic explicit events (default 1M) at a fixed rate through W worker processes
(default 3, 6 partitions) and one archiver, while it: kills a worker with -9 ten times at
random moments (restarting it), wipes Redis once, restarts Redis from an older RDB (kill -9,
then the snapshot taken earlier), promotes a replica that lacks the master's last writes (its
replication cut earlier, the master killed, the workers' address moved to it), kills Cassandra
with -9 for 60 s, restarts the Kafka broker once, kills a retrain mid-way, runs one full retrain
and one rollback. The soak runs its own Redis (RDB persistence, plus a replica) behind a
failover address (worker/devstack/proxy.py). Then it drains and prints a table whose loss
columns must all read 0:

- produced, applied (checkpoints of the serving version), dead-lettered, logged (rows in the
  Cassandra log), logged-contiguous (the archive's contiguous offsets), sum of item `n`;
- max abs diff of users and items against an uninterrupted in-memory run (several partitions:
  Hogwild interleaving, so not 0; see docs/exactly-once.md), and restore-vs-Redis diff.

    python benchmarks/chaos_soak.py                                # 1M events, ~6-10 min
    python benchmarks/chaos_soak.py --events 100000 --outage 15    # a short run
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import load_average  # noqa: E402
from producers.producer import RatingProducer  # noqa: E402
from producers.synthetic import generate  # noqa: E402
from worker.config import Settings, environ_for, load_config  # noqa: E402
from worker.control import lifecycle  # noqa: E402
from worker.control.retrain_job import CRASH_ENV  # noqa: E402
from worker.devstack import Stack, StackConfig  # noqa: E402
from worker.devstack.proxy import TcpProxy  # noqa: E402
from worker.stores import kafka as kafka_io  # noqa: E402
from worker.stores.cassandra.store import CassandraStore  # noqa: E402
from worker.stores.redis.store import RedisStore, dump_vectors  # noqa: E402


def settings_for(tag: str, partitions: int, rank: int, redis_port: int) -> Settings:
    return load_config(overrides={
        "redis.port": redis_port, "worker.redis_retry_budget_s": 120,
        "kafka.topic": f"chaos-{tag}", "kafka.dead_letter_topic": f"chaos-{tag}.dlq",
        "kafka.group_id": f"chaos-{tag}", "kafka.partitions": partitions,
        "kafka.session_timeout_ms": 6000, "redis.key_prefix": f"chaos{tag}",
        "cassandra.keyspace": f"chaos_{tag}", "cassandra.enabled": True, "model.rank": rank,
        "worker.batch_max_events": 2000, "worker.batch_max_wait_ms": 50, "metrics.port": 0,
        "worker.reconnect_backoff_max_s": 5, "archive.snapshot_interval_s": 20,
        "retrain.iterations": 5, "retrain.gate_margin": 10.0, "retrain.lock_ttl_s": 5,
        "retrain.holdout_fraction": 0.02,
    }, environ={})


class Fleet:
    """Worker and archiver subprocesses, restarted when they exit or are killed."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.env = environ_for(settings)
        base = [sys.executable, "-m", "worker.cli"]
        quiet = ["--no-metrics-server", "--log-level", "ERROR"]
        self.worker_cmd = base + ["worker", *quiet]
        self.archive_cmd = base + ["archive", *quiet]
        self.workers = [self._start(self.worker_cmd) for _ in range(workers)]
        self.archiver = self._start(self.archive_cmd)
        self.kills = 0

    def _start(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=self.env)

    def kill_one(self, rng: np.random.Generator) -> None:
        j = int(rng.integers(0, len(self.workers)))
        self.workers[j].kill()
        self.workers[j].wait()
        self.kills += 1
        self.workers[j] = self._start(self.worker_cmd)

    def revive(self) -> None:  # a worker that gave up (e.g. Redis away too long) comes back
        self.workers = [w if w.poll() is None else self._start(self.worker_cmd) for w in self.workers]
        if self.archiver.poll() is not None:
            self.archiver = self._start(self.archive_cmd)

    def stop(self) -> None:
        for p in [*self.workers, self.archiver]:
            p.send_signal(signal.SIGTERM)
        for p in [*self.workers, self.archiver]:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def produce_at_rate(settings: Settings, n: int, rate: float, seed: int, done: list[int]) -> None:
    producer = RatingProducer(settings.kafka, fmt="json", mode="explicit")
    t0 = time.perf_counter()
    sent = 0
    for chunk in generate(n_events=n, n_users=20_000, n_items=5_000, k=8, seed=seed,
                          chunk_rows=5_000):
        producer.send_batch(chunk)
        sent += len(chunk)
        done[0] = sent
        ahead = t0 + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(300)


def reference(settings: Settings, n: int, seed: int) -> Any:
    from online_als.adaptive import AdaptiveModel, event_seconds
    from worker.control.materialize import online_model

    m = settings.model
    model = online_model(settings, "explicit", m.rank, m.global_mean)  # the worker's learner
    for chunk in generate(n_events=n, n_users=20_000, n_items=5_000, k=8, seed=seed,
                          chunk_rows=100_000):
        users, items = chunk.user_ids.astype(str), chunk.item_ids.astype(str)
        if isinstance(model, AdaptiveModel):  # its sessions follow the events' own times
            model.learn_batch(users, items, chunk.values, event_seconds(chunk.timestamps))
        else:
            model.learn_batch(users, items, chunk.values)
    return model


def max_diff(store: RedisStore, version: int, rank: int, model: Any) -> tuple[float, float]:
    out = []
    s = model.state
    for kind, idmap, f in (("u", s.users, s.user_factors), ("i", s.items, s.item_factors)):
        side = dump_vectors(store, version, kind, rank)
        ids, got = side.id_list(), side.vectors
        rows = idmap.rows_for(ids, add=False)
        ok = rows >= 0
        out.append(float(np.abs(got[ok] - f[rows[ok]]).max()) if ok.any() else float("nan"))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=5_000, help="events/s offered")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--outage", type=float, default=60, help="seconds Cassandra stays down")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    stack = Stack(StackConfig.from_env())
    tag = uuid.uuid4().hex[:8]
    redis_stack = Stack(StackConfig.from_env(
        runtime_dir=stack.config.runtime_dir.parent / f"chaos-redis-{tag}",
        redis_port=free_port(), redis_replica_port=free_port(), redis_persistence="rdb",
        redis_save=""))
    redis_stack.up(["redis", "redis-replica"])
    address = TcpProxy(redis_stack.config.redis_port)  # what the workers connect to
    s = settings_for(tag, a.partitions, a.rank, address.port)
    kafka_io.ensure_topics(s.kafka, {s.kafka.topic: a.partitions, s.kafka.dead_letter_topic: 1})
    with CassandraStore(s.cassandra) as cass:
        cass.migrate()
    store = RedisStore.from_settings(s.redis)
    print(f"# chaos soak: {a.events:,} events at {a.rate:,.0f}/s, {a.workers} workers, "
          f"{a.partitions} partitions, k={a.rank}; cpus={os.cpu_count()}, load {load_average()}",
          flush=True)
    fleet = Fleet(s, a.workers)
    sent = [0]
    producer = threading.Thread(target=produce_at_rate, args=(s, a.events, a.rate, a.seed, sent),
                                daemon=True)
    t0 = time.perf_counter()
    producer.start()
    rng = np.random.default_rng(a.seed)
    plan: list[tuple[float, str]] = [(float(f), "kill") for f in rng.uniform(0.05, 0.95, a.kills)]
    plan += [(0.2, "kafka"), (0.25, "redis-save"), (0.3, "retrain-killed"), (0.4, "retrain"),
             (0.45, "redis-rdb"), (0.5, "wipe"), (0.55, "replica-cut"), (0.62, "redis-failover"),
             (0.7, "cassandra"), (0.85, "rollback")]
    plan.sort()
    log: list[str] = []
    env = environ_for(s)
    for frac, what in plan:
        while sent[0] < frac * a.events and producer.is_alive():
            time.sleep(0.05)
            fleet.revive()
        at = f"{time.perf_counter() - t0:6.1f}s {sent[0]:>9,}"
        if what == "kill":
            fleet.kill_one(rng)
        elif what == "kafka":
            stack.down(["kafka"])
            stack.up(["kafka"])
        elif what == "retrain-killed":
            proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "retrain", "--force",
                                     "--log-level", "ERROR"], env={**env, CRASH_ENV: "load"})
            proc.wait(600)
            time.sleep(s.retrain.lock_ttl_s + 1)
        elif what == "retrain":
            subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force",
                            "--log-level", "ERROR"], env=env, timeout=900, check=False)
        elif what == "wipe":
            keys = list(store.client.scan_iter(match=f"{s.redis.key_prefix}:*", count=10000))
            for j in range(0, len(keys), 10000):
                store.client.unlink(*keys[j:j + 10000])
        elif what == "redis-save":  # the snapshot "redis-rdb" goes back to
            redis.Redis(port=redis_stack.config.redis_port).save()
        elif what == "redis-rdb":  # kill -9, restart from the older RDB
            redis_stack.server("redis").kill()
            redis_stack.up(["redis"])
            redis.Redis(port=redis_stack.config.redis_replica_port).execute_command(
                "REPLICAOF", "127.0.0.1", str(redis_stack.config.redis_port))
        elif what == "replica-cut":  # from here on the master's writes are unreplicated
            redis.Redis(port=redis_stack.config.redis_replica_port).execute_command(
                "REPLICAOF", "NO", "ONE")
        elif what == "redis-failover":  # the master dies; its address moves to the replica
            redis_stack.server("redis").kill()
            address.retarget(redis_stack.config.redis_replica_port)
        elif what == "cassandra":  # killed, not stopped: the commit log must replay
            stack.server("cassandra").kill()
            time.sleep(a.outage)
            stack.up(["cassandra"])
        elif what == "rollback":
            with CassandraStore(s.cassandra) as cass:
                serving = lifecycle.serving_version(cass)
                older = [v.version for v in cass.list_versions()
                         if v.status in ("promoted", "rolled_back") and v.version != serving]
                if older:
                    lifecycle.rollback(s, cass, store, max(older), "chaos soak rollback")
        log.append(f"{at} {what}")
        print(f"  {log[-1]}", flush=True)
    producer.join()
    n = a.events
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        fleet.revive()
        version = store.current_version()
        with CassandraStore(s.cassandra) as cass:
            logged_contiguous = sum(cass.contiguous_offsets(s.kafka.topic).values())
        applied = 0 if version is None else sum(
            cp.offset or 0 for cp in
            store.read_checkpoints(version, s.kafka.topic, list(range(a.partitions))).values())
        if applied >= n and logged_contiguous >= n:
            break
        time.sleep(1)
    fleet.stop()
    wall = time.perf_counter() - t0
    version = store.current_version()
    assert version is not None
    ids = dump_vectors(store, version, "i", a.rank).id_list()
    print(f"serving version {version}: {len(dump_vectors(store, version, 'u', a.rank)):,} "
          f"users, {len(ids):,} items; resident {lifecycle.resident_versions(store)}", flush=True)
    pipe = store.client.pipeline(transaction=False)
    for i in ids:
        pipe.hget(store.keys.item(version, i), "n")
    sum_n = sum(int(x or 0) for x in pipe.execute())
    with CassandraStore(s.cassandra) as cass:
        logged = sum(len(c.offsets) for c in cass.iter_log(s.kafka.topic))
        logged_contiguous = sum(cass.contiguous_offsets(s.kafka.topic).values())
        restored = s.model_copy(update={"redis": s.redis.model_copy(
            update={"key_prefix": s.redis.key_prefix + "r"})})
        rstore = RedisStore.from_settings(restored.redis)
        lifecycle.restore(restored, cass, rstore)
    consumer = kafka_io.make_consumer(s.kafka, **{"group.id": f"chaos-{tag}-count"})
    dlq = sum(kafka_io.high_watermarks(consumer, s.kafka.dead_letter_topic, [0]).values())
    consumer.close()
    model = reference(s, n, a.seed)
    du, di = max_diff(store, version, a.rank, model)
    ru, ri = max_diff(rstore, version, a.rank, _live_model(s, version, a.rank))
    rows = [("produced", n), ("applied", applied), ("dead-lettered", dlq), ("logged", logged),
            ("logged-contiguous", logged_contiguous), ("sum of item n", sum_n),
            ("lost (produced - applied - dead-lettered)", n - applied - dlq),
            ("lost from the log (produced - logged)", n - logged),
            ("log holes (logged - contiguous)", logged - logged_contiguous),
            ("double-applied (sum n - applied)", sum_n - applied),
            ("max abs diff users vs uninterrupted 1-process run", f"{du:.4f}"),
            ("max abs diff items vs uninterrupted 1-process run", f"{di:.4f}"),
            ("restore vs Redis max abs diff (users / items)", f"{ru:.4f} / {ri:.4f}")]
    print(f"\n# chaos soak done in {wall:.0f}s: {fleet.kills} worker kills; load {load_average()}")
    for name, value in rows:
        print(f"| {name:<52} | {value:>14} |" if isinstance(value, str)
              else f"| {name:<52} | {value:>14,} |")
    for st in (store, rstore):
        keys = list(st.client.scan_iter(match=f"{st.keys.prefix}:*", count=10000))
        for j in range(0, len(keys), 10000):
            st.client.unlink(*keys[j:j + 10000])
    with CassandraStore(s.cassandra) as cass:
        cass.drop_keyspace()
    address.close()
    redis_stack.down(["redis", "redis-replica"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _live_model(s: Settings, version: int, rank: int) -> Any:
    """The live Redis of the soak as an in-memory model, to compare the restore against."""
    from online_als.factors import ModelArrays
    from online_als.online import ExplicitParams, OnlineModel

    live = RedisStore.from_settings(s.redis)
    model = ModelArrays("explicit", dump_vectors(live, version, "u", rank),
                        dump_vectors(live, version, "i", rank))
    return OnlineModel(model.state(), ExplicitParams())


if __name__ == "__main__":
    main()
