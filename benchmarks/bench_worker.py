"""End-to-end worker benchmark on the local stack (issue 4; persistence on/off).

1. throughput: pre-produce N synthetic ML-20M-shaped events (binary encoding) into a topic
   with several partitions, start one worker process, time until its Redis checkpoints cover
   every event; sample the worker's RSS every second. Run with persistence off, and on: then
   the archiver (`online-als archive`, the Cassandra log and stream snapshots) runs beside the
   worker on the same cores, and the time until the log covers every event is reported too.
2. latency: with the worker caught up, offer events at a fixed rate; the event-to-Redis
   latency of each event is (first time the Redis checkpoint covers its offset) - (send time),
   polled every 5 ms.
3. peer: River's in-memory ``BiasedMF.learn_one`` on a prefix of the same stream.

    python benchmarks/bench_worker.py                       # 5M events, 50k/s latency phase
    python benchmarks/bench_worker.py --events 500000 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.producer import RatingProducer  # noqa: E402
from producers.synthetic import ML20M, generate  # noqa: E402
from worker.config import Settings, environ_for, load_config  # noqa: E402
from worker.stores import kafka as kafka_io  # noqa: E402
from worker.stores.redis.store import RedisStore, connect  # noqa: E402


def settings_for(tag: str, partitions: int, rank: int, persist: bool) -> Settings:
    return load_config(overrides={
        "kafka.topic": f"bench-{tag}", "kafka.dead_letter_topic": f"bench-{tag}.dlq",
        "kafka.group_id": f"bench-{tag}", "kafka.partitions": partitions,
        "redis.key_prefix": f"bench{tag}", "cassandra.keyspace": f"bench_{tag}",
        "cassandra.enabled": persist, "model.rank": rank, "archive.snapshot_interval_s": 30,
        "worker.batch_max_events": 20000, "worker.batch_max_wait_ms": 20, "metrics.port": 0,
    }, environ={})


def produce(s: Settings, n: int, seed: int, offset_ts: bool = False) -> float:
    kafka_io.ensure_topics(s.kafka, {s.kafka.topic: s.kafka.partitions,
                                     s.kafka.dead_letter_topic: 1})
    producer = RatingProducer(s.kafka, fmt="binary", mode="explicit")
    t0 = time.perf_counter()
    for chunk in generate(n_events=n, seed=seed, chunk_rows=100_000):
        producer.send_batch(chunk)
    producer.flush(120)
    return time.perf_counter() - t0


def applied_offsets(store: RedisStore, s: Settings) -> int:
    version = store.current_version()
    if version is None:
        return 0
    cps = store.read_checkpoints(version, s.kafka.topic, list(range(s.kafka.partitions)))
    return sum(cp.offset or 0 for cp in cps.values())


def cleanup(s: Settings) -> None:
    """Remove what a run created: Redis keys of its prefix, its keyspace, its topics."""
    from confluent_kafka.admin import AdminClient

    client = connect(s.redis)
    batch = list(client.scan_iter(match=f"{s.redis.key_prefix}:*", count=10000))
    for start in range(0, len(batch), 10000):
        client.unlink(*batch[start:start + 10000])
    if s.cassandra.enabled:
        from worker.stores.cassandra.store import CassandraStore

        with CassandraStore(s.cassandra) as cass:
            cass.drop_keyspace()
    admin = AdminClient(kafka_io.client_config(s.kafka))
    for fut in admin.delete_topics([s.kafka.topic, s.kafka.dead_letter_topic]).values():
        with contextlib.suppress(Exception):  # already gone
            fut.result(30)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def throughput_run(n: int, partitions: int, rank: int, persist: bool) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    s = settings_for(tag, partitions, rank, persist)
    produce_s = produce(s, n, seed=1)
    store = RedisStore.from_settings(s.redis)
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server",
                             "--log-level", "WARNING", "--idle-exit", "5"], env=environ_for(s))
    archiver = None
    if persist:
        archiver = subprocess.Popen([sys.executable, "-m", "worker.cli", "archive",
                                     "--no-metrics-server", "--log-level", "WARNING",
                                     "--idle-exit", "5"], env=environ_for(s))
    rss: list[float] = []
    t_first = None
    t0 = time.perf_counter()
    last_sample = 0.0
    while True:
        done = applied_offsets(store, s)
        now = time.perf_counter()
        if t_first is None and done > 0:
            t_first = now
        if now - last_sample >= 1.0:
            rss.append(rss_mib(proc.pid))
            last_sample = now
        if done >= n or proc.poll() is not None or now - t0 > 3600:
            break
        time.sleep(0.05)
    t_end = time.perf_counter()
    archive_s = float("nan")
    if archiver is not None:
        from worker.stores.cassandra.store import CassandraStore

        with CassandraStore(s.cassandra) as cass:
            while sum(cass.contiguous_offsets(s.kafka.topic).values()) < n:
                if archiver.poll() is not None or time.perf_counter() - t0 > 3600:
                    break
                time.sleep(0.2)
        archive_s = time.perf_counter() - (t_first or t0)
        archiver.terminate()
        archiver.wait(120)
    proc.terminate()
    proc.wait(120)
    cleanup(s)
    rate = n / (t_end - (t_first or t0))
    half = len(rss) // 2
    return {"events": n, "produce_s": produce_s, "apply_s": t_end - (t_first or t0),
            "applied_per_s": rate, "rss_start_mib": float(np.nanmean(rss[1:3] or [np.nan])),
            "rss_mid_mib": float(rss[half]) if rss else float("nan"),
            "rss_end_mib": float(rss[-1]) if rss else float("nan"), "complete": float(done >= n),
            "archive_s": archive_s}


def latency_run(rate: float, seconds: float, partitions: int, rank: int) -> dict[str, float]:
    from confluent_kafka import Producer

    from worker.events import encode_binary

    tag = uuid.uuid4().hex[:8]
    s = settings_for(tag, partitions, rank, persist=False)
    produce(s, 50_000, seed=2)  # warm the model and the JIT before timing
    store = RedisStore.from_settings(s.redis)
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server",
                             "--log-level", "WARNING", "--idle-exit", "8"], env=environ_for(s))
    while applied_offsets(store, s) < 50_000:
        time.sleep(0.1)
    sent: dict[int, list[tuple[int, float]]] = {p: [] for p in range(partitions)}
    lock = threading.Lock()

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            with lock:
                sent[msg.partition()].append((msg.offset(), msg._sent))  # type: ignore[attr-defined]

    producer = Producer({**kafka_io.producer_config(s.kafka), "linger.ms": 1})
    n = int(rate * seconds)
    stream = next(generate(n_events=n, seed=3, chunk_rows=n))
    users, items, vals = (stream.user_ids.astype(str).tolist(), stream.item_ids.astype(str).tolist(),
                          stream.values.tolist())
    covered: dict[int, list[tuple[int, float]]] = {p: [] for p in range(partitions)}
    stop = threading.Event()

    def poll_checkpoints() -> None:
        version = store.current_version() or 0
        while not stop.is_set():
            cps = store.read_checkpoints(version, s.kafka.topic, list(range(partitions)))
            now = time.perf_counter()
            for p, cp in cps.items():
                covered[p].append((cp.offset or 0, now))
            time.sleep(0.005)

    poller = threading.Thread(target=poll_checkpoints, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    tick = 0.01  # send in 10 ms bursts and sleep between them: no busy-wait stealing a core
    for j in range(n):
        target = t0 + j / rate
        ahead = target - time.perf_counter()
        if ahead > tick:
            producer.poll(0)
            time.sleep(ahead)
        value = encode_binary(users[j], items[j], rating=vals[j])
        now = time.perf_counter()

        def cb(err: object, msg: object, now: float = now) -> None:
            if err is None:
                with lock:
                    sent[msg.partition()].append((msg.offset(), now))  # type: ignore[attr-defined]

        while True:
            try:
                producer.produce(s.kafka.topic, value=value, key=users[j].encode(), on_delivery=cb)
                break
            except BufferError:  # the local queue is full: let librdkafka deliver some first
                producer.poll(0.01)
    producer.flush(60)
    offered = n / (time.perf_counter() - t0)
    time.sleep(2)
    stop.set()
    poller.join()
    proc.terminate()
    proc.wait(60)
    cleanup(s)
    lat: list[float] = []
    for p in range(partitions):
        if not covered[p] or not sent[p]:
            continue
        offs = np.array([c[0] for c in covered[p]])
        times = np.array([c[1] for c in covered[p]])
        for off, t_sent in sent[p]:
            j = int(np.searchsorted(offs, off + 1))  # first poll whose checkpoint covers off
            if j < len(offs):
                lat.append(times[j] - t_sent)
    arr = np.array(lat) * 1000
    return {"offered_per_s": offered, "events": float(len(arr)),
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max())}


def river_rate(n: int) -> float:
    from river import optim, reco

    model = reco.BiasedMF(n_factors=64, bias_optimizer=optim.SGD(0.01),
                          latent_optimizer=optim.SGD(0.01), l2_bias=0.05, l2_latent=0.05)
    chunk = next(generate(n_events=n, seed=1, chunk_rows=n))
    users, items, vals = (chunk.user_ids.astype(str).tolist(), chunk.item_ids.astype(str).tolist(),
                          chunk.values.tolist())
    t0 = time.perf_counter()
    for u, i, v in zip(users, items, vals, strict=True):
        model.learn_one(u, i, v)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--rate", type=float, default=None,
                    help="one fixed offered rate for the latency phase (default: 25/50/75%% "
                         "of the capacity measured by the throughput run)")
    ap.add_argument("--latency-fractions", default="0.25,0.5,0.75")
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--river-events", type=int, default=200_000)
    ap.add_argument("--skip-persistence", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    a = ap.parse_args()
    if a.quick:
        a.events, a.latency_seconds, a.river_events = 200_000, 3, 20_000
    print(f"# worker benchmark: {a.events:,} events of an ML-20M-shaped stream "
          f"({ML20M['n_users']:,} users x {ML20M['n_items']:,} items), k={a.rank}, "
          f"{a.partitions} partitions, 1 worker; cpus={os.cpu_count()}, "
          f"load={os.getloadavg()[0]:.1f}")
    rows = []
    off = throughput_run(a.events, a.partitions, a.rank, persist=False)
    rows.append(("worker, persistence off", off))
    if not a.skip_persistence:
        on = throughput_run(a.events, a.partitions, a.rank, persist=True)
        rows.append(("worker, persistence on", on))
    print(f"\n{'run':<26} {'applied/s':>11} {'apply s':>8} {'RSS start/mid/end MiB':>24}")
    for name, r in rows:
        print(f"{name:<26} {r['applied_per_s']:>11,.0f} {r['apply_s']:>8.1f} "
              f"{r['rss_start_mib']:>7.0f}/{r['rss_mid_mib']:.0f}/{r['rss_end_mib']:.0f}")
    if len(rows) == 2:
        gap = 1 - rows[1][1]["applied_per_s"] / rows[0][1]["applied_per_s"]
        print(f"persistence cost (worker applied/s with the archiver beside it vs alone): "
              f"{gap:.1%} (goal <= 10%); the log covered every event after "
              f"{rows[1][1]['archive_s']:.1f}s")
    capacity = rows[-1][1]["applied_per_s"]  # with persistence when it ran: the real setup
    rates = ([a.rate] if a.rate else
             [f * capacity for f in (float(x) for x in a.latency_fractions.split(","))])
    print(f"\n{'offered/s':>10} {'of capacity':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for rate in rates:
        lat = latency_run(rate, a.latency_seconds, a.partitions, a.rank)
        print(f"{lat['offered_per_s']:>10,.0f} {lat['offered_per_s'] / capacity:>12.0%} "
              f"{lat['p50_ms']:>8.1f} {lat['p99_ms']:>8.1f} {lat['max_ms']:>8.1f}")
    print("goal: p99 <= 250 ms at 50% of capacity")
    rr = river_rate(a.river_events)
    print(f"\nRiver BiasedMF.learn_one (in memory, no I/O), k=64: {rr:,.0f} ratings/s "
          f"on {a.river_events:,} events")
    for name, r in rows:
        growth = (r["rss_end_mib"] - r["rss_mid_mib"]) / r["rss_mid_mib"]
        print(f"{name}: {r['applied_per_s'] / rr:.2f}x River (goal >= 2x); RSS growth over the "
              f"second half {growth:+.1%} (goal <= 5%)")
    print(f"load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
