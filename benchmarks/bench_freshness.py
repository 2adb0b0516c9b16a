"""The freshness SLO from the worker's own metric (issue 25 item 5): ``online-als worker`` in
its own process applies events stamped with the time they are sent, offered at fixed rates,
and its ``online_als_freshness_seconds`` histogram (event time -> visible in Redis) is
scraped after each phase; p50/p99 are interpolated from the buckets as Prometheus'
``histogram_quantile`` does, so the figures are the ones the dashboard and the alert see.

    python benchmarks/bench_freshness.py                        # 2,000 and 6,000 events/s
    python benchmarks/bench_freshness.py --rates 1000,5000,10000 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import _common  # noqa: F401  (puts the repository root on sys.path)
import orjson
from _http_load import free_port
from bench_worker import cleanup
from confluent_kafka import Producer

from worker.config import environ_for, load_config
from worker.stores import kafka as kafka_io


def scrape(port: int) -> dict[float, float]:
    """Cumulative freshness bucket counts by upper bound (inf for +Inf)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("online_als_freshness_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def quantile(q: float, cum: dict[float, float]) -> float:
    """``histogram_quantile`` over cumulative counts (linear inside a bucket)."""
    bounds = sorted(cum)
    total = cum[bounds[-1]]
    rank, prev_b, prev_c = q * total, 0.0, 0.0
    for b in bounds:
        if cum[b] >= rank:
            if b == float("inf"):
                return prev_b
            return prev_b + (b - prev_b) * (rank - prev_c) / max(cum[b] - prev_c, 1e-12)
        prev_b, prev_c = b, cum[b]
    return prev_b


def offer(producer: Producer, topic: str, rate: int, seconds: float, users: int = 5000,
          items: int = 20000) -> int:
    """Send ``rate`` events/s for ``seconds``, each stamped with its send time."""
    sent, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(min(due, 2000)):
            j = sent
            producer.produce(topic, orjson.dumps({"user_id": f"u{(j * 7919) % users}",
                                                  "item_id": f"i{(j * 104729) % items}",
                                                  "rating": float(1 + j % 5), "ts": time.time()}),
                             key=str(j % users).encode())
            sent += 1
        producer.poll(0)
        if due <= 0:
            time.sleep(0.001)
    producer.flush(30)
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="2000,6000", help="events/s, comma-separated")
    p.add_argument("--seconds", type=float, default=15.0, help="per rate")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--rank", type=int, default=64)
    a = p.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    s = load_config(overrides={
        "kafka.topic": f"bench-fresh-{tag}", "kafka.dead_letter_topic": f"bench-fresh-{tag}.dlq",
        "kafka.group_id": f"bench-fresh-{tag}", "kafka.partitions": a.partitions,
        "redis.key_prefix": f"benchfresh{tag}", "cassandra.keyspace": f"bench_fresh_{tag}",
        "cassandra.enabled": False, "model.rank": a.rank, "metrics.port": port}, environ={})
    kafka_io.ensure_topics(s.kafka, {s.kafka.topic: a.partitions, s.kafka.dead_letter_topic: 1})
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--log-level",
                             "WARNING"], env=environ_for(s))
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "linger.ms": 5,
                         "enable.idempotence": True})
    rows = []
    load0 = os.getloadavg()[0]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                scrape(port)
                break
            except OSError:
                time.sleep(0.2)
        offer(producer, s.kafka.topic, 500, 3.0)  # warm-up: JIT, first version, assignment
        time.sleep(2.0)
        for rate in (int(r) for r in a.rates.split(",")):
            before = scrape(port)
            sent = offer(producer, s.kafka.topic, rate, a.seconds)
            time.sleep(3.0)  # let the tail of the phase land
            after = scrape(port)
            delta = {b: after[b] - before.get(b, 0.0) for b in after}
            rows.append((rate, sent, delta[float("inf")], quantile(0.5, delta),
                         quantile(0.99, delta), delta.get(1.0, 0.0) / max(delta[float("inf")], 1)))
    finally:
        proc.terminate()
        proc.wait(30)
        cleanup(s)
    print(f"\nFreshness (online_als_freshness_seconds: event time -> visible in Redis), one "
          f"worker process, {a.partitions} partitions, k={a.rank}, {a.seconds:g} s per rate, "
          f"JSON events stamped at send time; {os.cpu_count()} cores, load average "
          f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("| offered events/s | sent | observed | p50 s | p99 s | within 1 s |")
    print("|---|---|---|---|---|---|")
    for rate, sent, seen, p50, p99, within in rows:
        print(f"| {rate:,} | {sent:,} | {seen:,.0f} | {p50:.3f} | {p99:.3f} | {within:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
