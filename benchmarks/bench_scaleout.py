"""Scale-out of the streaming side: 1, 2, 3 workers in one group on a 3-master Redis Cluster.

For each worker count: a fresh topic with ``--partitions`` (6) partitions is filled with
``--events`` ML-20M-shaped synthetic ratings (binary encoding), then that many
``online-als worker`` processes (one consumer group, persistence off) apply them to a 3-master
Redis Cluster this script starts on free ports (as ``tests/test_redis_cluster.py`` does).
Measured between the moment 5% of the events are applied (start-up and numba JIT left out)
and the moment all are:

- total applied/s;
- CPU seconds per 1,000 events: each worker process (its CPU / the events its partitions held),
  the three Redis masters together, and the Kafka broker (by default a private one this script
  starts from the stack's jars on free ports, so no other job's traffic is counted);

then, on the finished model, bytes in Redis (``MEMORY USAGE`` on a sample of keys, plus the
id-set share): per user vector, item vector, seen entry, and the fixed keys of one version.
With ``--cassandra N`` (default 200,000) a worker and the archiver write N events to the local
stack's Cassandra log and the resulting model is written as a factor snapshot
(``write_factors``, as a retrain does): the payload bytes per logged rating and per snapshot
vector are read back (blob lengths + the row's key columns; on-disk size after LZ4
and SSTable overhead is not measured: the local stack has no nodetool to flush with).

On 2 cores the total can't grow much with workers; the cost per event is what
``benchmarks/capacity.py`` needs.

``--single-redis-baseline`` adds one worker on the local stack's single Redis in the same run
(that Redis is shared with other jobs: its CPU figure is an upper bound).

    python benchmarks/bench_scaleout.py                     # 600k events, workers 1,2,3
    python benchmarks/bench_scaleout.py --events 100000 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_worker import cleanup, produce  # noqa: E402

from worker.config import Settings, environ_for, load_config  # noqa: E402
from worker.stores.redis.store import RedisStore, dump_vectors  # noqa: E402

HZ = 100  # clock ticks per second of /proc/<pid>/stat (Linux default)


def _free_port(taken: list[int]) -> int:
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 50000)
        ok = port not in taken
        for p in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port


@contextlib.contextmanager
def redis_cluster(root: Path) -> Any:
    """Three masters, no replicas; yields (first port, pids)."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is missing (online-als stack up installs it)")
    ports: list[int] = []
    for _ in range(3):
        ports.append(_free_port(ports))
    procs = []
    for port in ports:
        d = root / str(port)
        d.mkdir()
        procs.append(subprocess.Popen([
            server, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"), "--save", "", "--appendonly", "no",
            "--dir", str(d)], stdout=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                subprocess.run(["redis-cli", "-p", str(p), "ping"], capture_output=True,
                               text=True).stdout.strip() == "PONG" for p in ports):
            time.sleep(0.1)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "cluster_state:ok" not in subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True,
                text=True).stdout:
            time.sleep(0.2)
        yield ports[0], [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / HZ


KAFKA: dict[str, Any] = {"bootstrap": None, "pid": None}  # a private broker (--own-kafka)


def kafka_pid() -> int | None:
    if KAFKA["pid"]:
        return int(KAFKA["pid"])
    from worker.devstack import Stack, StackConfig

    status = Stack(StackConfig.from_env()).status(("kafka",))
    return status["kafka"].pid if status["kafka"].running else None


@contextlib.contextmanager
def own_kafka(root: Path) -> Any:
    """A Kafka broker of its own (free ports, its own runtime dir), stopped at the end: the
    shared stack's broker serves other jobs too (its CPU would not be ours alone)."""
    import dataclasses

    from worker.devstack import Stack, StackConfig

    taken: list[int] = []
    port = _free_port(taken)
    cfg = dataclasses.replace(StackConfig.from_env(), runtime_dir=root / "stack",
                              kafka_port=port, kafka_controller_port=_free_port([port]))
    st = Stack(cfg)
    st.up(("kafka",))
    try:
        KAFKA.update(bootstrap=f"127.0.0.1:{port}", pid=st.status(("kafka",))["kafka"].pid)
        yield
    finally:
        st.down(("kafka",))
        KAFKA.update(bootstrap=None, pid=None)


def settings_for(tag: str, partitions: int, rank: int, redis_port: int | None) -> Settings:
    over: dict[str, Any] = {
        "kafka.topic": f"scale-{tag}", "kafka.dead_letter_topic": f"scale-{tag}.dlq",
        "kafka.group_id": f"scale-{tag}", "kafka.partitions": partitions,
        "redis.key_prefix": f"scale{tag}", "cassandra.keyspace": f"scale_{tag}",
        "cassandra.enabled": False, "model.rank": rank, "metrics.port": 0,
        "worker.batch_max_events": 20000, "worker.batch_max_wait_ms": 20}
    if KAFKA["bootstrap"]:
        over["kafka.bootstrap_servers"] = KAFKA["bootstrap"]
    if redis_port is not None:
        over.update({"redis.cluster": True, "redis.port": redis_port})
    return load_config(overrides=over, environ={})


def applied(store: RedisStore, s: Settings) -> tuple[int, dict[int, int]]:
    version = store.current_version()
    if version is None:
        return 0, {}
    cps = store.read_checkpoints(version, s.kafka.topic, list(range(s.kafka.partitions)))
    per = {p: cp.offset or 0 for p, cp in cps.items()}
    return sum(per.values()), per


def run_workers(n_workers: int, a: Any, port: int | None, redis_pids: list[int]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    s = settings_for(tag, a.partitions, a.k, port)
    produce(s, a.events, seed=1)
    store = RedisStore.from_settings(s.redis)
    procs = [subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server",
                               "--log-level", "WARNING", "--idle-exit", "6"], env=environ_for(s))
             for _ in range(n_workers)]
    kpid = kafka_pid()
    watched = {f"worker{j + 1}": p.pid for j, p in enumerate(procs)}
    watched.update({f"redis{j + 1}": pid for j, pid in enumerate(redis_pids)})
    if kpid:
        watched["kafka"] = kpid
    start: dict[str, float] = {}
    t_start = n_start = 0.0
    t0 = time.perf_counter()
    while True:
        done, _ = applied(store, s)
        now = time.perf_counter()
        if not start and done >= 0.05 * a.events:
            start = {k: cpu_s(pid) for k, pid in watched.items()}
            t_start, n_start = now, done
        if done >= a.events or now - t0 > 1800 or all(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    end = {k: cpu_s(pid) for k, pid in watched.items()}
    t_end = time.perf_counter()
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)
    events = done - n_start
    per_worker = events / n_workers  # partitions split evenly (6 over 1, 2, 3) and keyed by user
    cost = {k: (end[k] - start[k]) / ((per_worker if k.startswith("worker") else events) / 1000)
            for k in watched}
    redis_total = sum(v for k, v in cost.items() if k.startswith("redis"))
    out = {"workers": n_workers, "events": int(events), "seconds": t_end - t_start,
           "applied_per_s": events / (t_end - t_start), "complete": done >= a.events,
           "cpu_per_1k": cost, "redis_cpu_per_1k": redis_total,
           "memory": redis_bytes(store, s) if n_workers == 1 and port is not None else {}}
    cleanup(s)
    return out


def redis_bytes(store: RedisStore, s: Settings, sample: int = 300) -> dict[str, float]:
    """Bytes per user vector, item vector and seen entry, and a version's fixed keys."""
    c, keys = store.client, store.keys
    version = store.current_version()
    assert version is not None
    uids = dump_vectors(store, version, "u", s.model.rank).id_list()
    iids = dump_vectors(store, version, "i", s.model.rank).id_list()
    rng = np.random.default_rng(0)
    su = [uids[j] for j in rng.choice(len(uids), min(sample, len(uids)), replace=False)]
    si = [iids[j] for j in rng.choice(len(iids), min(sample, len(iids)), replace=False)]
    mem = lambda key: int(c.memory_usage(key, samples=0) or 0)  # noqa: E731
    set_u = mem(keys.user_index(version)) / max(len(uids), 1)
    set_i = mem(keys.item_index(version)) / max(len(iids), 1)
    seen_bytes = sum(mem(keys.seen(version, u)) for u in su)
    seen_entries = sum(int(c.hlen(keys.seen(version, u))) for u in su)
    fixed = [keys.meta(version)] + [keys.checkpoint(version, s.kafka.topic, p)
                                    for p in range(s.kafka.partitions)]
    return {"user_vector": np.mean([mem(keys.user(version, u)) for u in su]) + set_u,
            "item_vector": np.mean([mem(keys.item(version, i)) for i in si]) + set_i,
            "seen_entry": seen_bytes / max(seen_entries, 1),
            "version_fixed": float(sum(mem(k) for k in fixed) + mem(keys.current())),
            "users": len(uids), "items": len(iids), "k": s.model.rank}


def cassandra_bytes(n: int, k: int) -> dict[str, float]:
    """Payload bytes per logged rating and per snapshot vector (module docstring)."""
    from worker.control.archive import Archiver
    from worker.stores.cassandra.store import CassandraStore

    tag = uuid.uuid4().hex[:8]
    s = load_config(overrides={**{f"kafka.{x}": v for x, v in (
        ("topic", f"scale-{tag}"), ("dead_letter_topic", f"scale-{tag}.dlq"),
        ("group_id", f"scale-{tag}"), ("partitions", 2))},
        "redis.key_prefix": f"scale{tag}", "cassandra.keyspace": f"scale_{tag}",
        "cassandra.enabled": True, "model.rank": k, "metrics.port": 0,
        "archive.snapshot_interval_s": 0}, environ={})
    with CassandraStore(s.cassandra) as cass:
        cass.migrate()
    produce(s, n, seed=4)
    subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server",
                    "--log-level", "WARNING", "--idle-exit", "4"], env=environ_for(s), check=True)
    Archiver(s).run(idle_exit_s=4)
    out: dict[str, float] = {}
    store = RedisStore.from_settings(s.redis)
    version = store.current_version()
    assert version is not None
    with CassandraStore(s.cassandra) as cass:
        for kind in ("u", "i"):  # a snapshot of the model, written as a retrain writes one
            cass.write_factors(version, kind, dump_vectors(store, version, kind, k))
        sess, ks = cass.db.session, s.cassandra.keyspace
        log_rows = list(sess.execute(
            f"SELECT topic, user_ids, item_ids, vals, ts, offsets, n FROM {ks}.ratings_log"))
        # topic, user_ids, item_ids, vals, ts, offsets (blobs) + partition, bucket, first/last
        # offset, n, written_at (4 + 8 + 8 + 8 + 4 + 8 bytes)
        blob = sum(sum(len(x) for x in r[:6]) + 40 for r in log_rows)
        out["log_bytes_per_rating"] = blob / max(sum(r[6] for r in log_rows), 1)
        out["log_rows"] = len(log_rows)
        blocks = list(sess.execute(f"SELECT ids, factors, biases, n FROM {ks}.factor_blocks"))
        vb = sum(len(b[0]) + len(b[1]) + len(b[2]) + 20 for b in blocks)  # + version, kind...
        out["snapshot_bytes_per_vector"] = vb / max(sum(b[3] for b in blocks), 1)
        out["snapshot_vectors"] = sum(b[3] for b in blocks)
    cleanup(s)
    return out


def cassandra_with_retries(n: int, k: int, tries: int = 5) -> dict[str, float]:
    """The shared Cassandra may be restarted by other jobs: wait and try again."""
    from worker.stores.cassandra.session import CassandraUnavailable

    for attempt in range(tries):
        try:
            return cassandra_bytes(n, k)
        except (CassandraUnavailable, subprocess.CalledProcessError) as exc:
            print(f"Cassandra part failed ({type(exc).__name__}), retry {attempt + 1}/{tries}")
            time.sleep(30)
    return {}


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--events", type=int, default=600_000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--cassandra", type=int, default=200_000, help="0 skips the Cassandra part")
    p.add_argument("--single-redis-baseline", action="store_true",
                   help="also run one worker on the local stack's single Redis (same run)")
    p.add_argument("--own-kafka", action=argparse.BooleanOptionalAction, default=True,
                   help="start a private Kafka broker for the worker runs (default)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers it started
    if a.quick:
        a.events, a.cassandra = min(a.events, 60_000), min(a.cassandra, 20_000)
    info = C.header("bench_scaleout: workers in one group on a 3-master Redis Cluster", a)
    runs = []
    with tempfile.TemporaryDirectory() as root, redis_cluster(Path(root)) as (port, pids), \
            (own_kafka(Path(root)) if a.own_kafka else contextlib.nullcontext()):
        for n in [int(x) for x in a.workers.split(",")]:
            runs.append(run_workers(n, a, port, pids))
            print(f"{n} worker(s): {runs[-1]['applied_per_s']:,.0f} applied/s, "
                  f"load {C.load_average()}", flush=True)
        if a.single_redis_baseline:  # the same worker on the stack's single Redis
            from worker.devstack import Stack, StackConfig

            rpid = Stack(StackConfig.from_env()).status(("redis",))["redis"].pid
            base = run_workers(1, a, None, [rpid] if rpid else [])
            base["workers"] = "1 (single Redis, shared)"
            runs.append(base)
            print(f"single Redis: {base['applied_per_s']:,.0f} applied/s", flush=True)
        cass = cassandra_with_retries(a.cassandra, a.k) if a.cassandra else {}
    rows = []
    for r in runs:
        cost = r["cpu_per_1k"]
        ws = [f"{cost[k]:.3f}" for k in sorted(cost) if k.startswith("worker")]
        rows.append([r["workers"], f"{r['events']:,}", f"{r['applied_per_s']:,.0f}",
                     " / ".join(ws), f"{r['redis_cpu_per_1k']:.3f}",
                     f"{cost.get('kafka', float('nan')):.3f}", "yes" if r["complete"] else "NO"])
    C.table(["workers", "events timed", "applied/s total", "CPU s/1k ev per worker",
             "Redis (3 masters; shared: 1)", "Kafka broker (own)", "complete"], rows,
            f"{a.partitions} partitions, k={a.k}, ML-20M-shaped synthetic, persistence off")
    mem = runs[0]["memory"] if runs else {}
    if mem:
        C.table(["what", "bytes"], [[k, f"{v:,.0f}"] for k, v in mem.items()],
                f"Redis memory (MEMORY USAGE, samples=0; {mem['users']:,} users, "
                f"{mem['items']:,} items)")
    if cass:
        C.table(["what", "bytes"], [[k, f"{v:,.1f}"] for k, v in cass.items()],
                "Cassandra payload (blobs + key columns; before LZ4, without SSTable overhead)")
    print(f"\nload average at the end: {C.load_average()}")
    C.write_json(a.json, {"machine": info, "args": vars(a), "runs": runs, "cassandra": cass})


if __name__ == "__main__":
    main()
