"""Serving latency and throughput of ``ServingClient`` against the local Redis.

Writes a random ``--items`` x ``--rank`` model (the ML-25M-sized catalogue by default: 26,744
items at k=64) and ``--users`` users with seen histories straight through ``RedisStore`` under a
fresh prefix, then times, one call at a time in one thread, *including the Redis read*:

* the cache load (SMEMBERS + batched vector reads + counts) of the version,
* ``recommend(user, n)`` excluding the seen items (goal >= 2,000/s, p99 <= 5 ms),
* ``recommend_batch``, ``similar_items``, ``recommend_for_new_user``, ``predict``.

The prefix is deleted at the end unless ``--keep``.

    python benchmarks/bench_serving.py                      # 26,744 items, k=64, explicit
    python benchmarks/bench_serving.py --mode implicit --calls 5000 --n 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import redis

from worker.serving.client import ServingClient
from worker.stores.redis.batch_args import SeenUpdates
from worker.stores.redis.keys import FORMAT_VERSION, RedisKeys
from worker.stores.redis.store import RedisStore

GOAL_RATE, GOAL_P99_MS = 2000.0, 5.0


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=26_744)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--users", type=int, default=2000, help="users with vectors and histories")
    p.add_argument("--seen", type=int, default=100, help="mean history length per user")
    p.add_argument("--mode", choices=("explicit", "implicit"), default="explicit")
    p.add_argument("--calls", type=int, default=10_000, help="timed recommend calls")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--batch", type=int, default=256, help="users per recommend_batch call")
    p.add_argument("--host", default=os.environ.get("ONLINE_ALS_REDIS__HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("ONLINE_ALS_REDIS__PORT", 6379)))
    p.add_argument("--prefix", default=f"bench_serving_{os.getpid()}")
    p.add_argument("--keep", action="store_true", help="leave the prefix in Redis")
    return p.parse_args(argv)


def write_model(store: RedisStore, a: argparse.Namespace) -> tuple[list[str], list[str]]:
    """A complete version through RedisStore: meta, item/user vectors, counts, histories."""
    rng = np.random.default_rng(0)
    v = store.allocate_version()
    store.write_meta(v, {"format": FORMAT_VERSION, "mode": a.mode, "rank": a.rank,
                         "global_mean": 3.5, "status": "online", "source": "bench"})
    items = [f"m{j}" for j in range(a.items)]
    users = [f"u{j}" for j in range(a.users)]
    scale = 1.0 / np.sqrt(a.rank)
    item_f = (rng.standard_normal((a.items, a.rank)) * scale).astype(np.float32)
    counts = rng.zipf(1.5, a.items).clip(max=100_000)
    user_f = (rng.standard_normal((a.users, a.rank)) * scale).astype(np.float32)
    lengths = rng.poisson(a.seen, a.users).clip(min=1)
    urows = np.repeat(np.arange(a.users), lengths)
    hist = np.asarray(items, dtype=object)[rng.integers(0, a.items, urows.size)]
    seen = SeenUpdates([store.keys.seen(v, u) for u in users], urows, hist,
                       rng.integers(1, 6, urows.size).astype(np.float32),
                       "set" if a.mode == "explicit" else "incr")
    zb_i, zb_u = np.zeros(a.items, np.float32), np.zeros(a.users, np.float32)
    bias_i = (rng.standard_normal(a.items) * 0.3).astype(np.float32)
    bias_u = (rng.standard_normal(a.users) * 0.3).astype(np.float32)
    store.write_vectors(store.vector_keys(v, "i", items), "", np.zeros_like(item_f), item_f,
                        zb_i, bias_i, counts=counts)
    store.write_vectors(store.vector_keys(v, "u", users), "", np.zeros_like(user_f), user_f,
                        zb_u, bias_u, seen=seen)
    pipe = store.client.pipeline(transaction=False)
    store.add_to_index(v, "i", items, pipe)
    store.add_to_index(v, "u", users, pipe)
    pipe.execute()
    store.compare_and_switch(store.current_version(), v, "benchmark")
    return items, users


def _latencies(fn: Callable[[int], object], calls: int) -> tuple[float, np.ndarray]:
    """Calls/s and per-call latencies (ms) of ``fn(j)`` for j in range(calls)."""
    lat = np.empty(calls)
    start = time.perf_counter()
    for j in range(calls):
        t = time.perf_counter()
        fn(j)
        lat[j] = time.perf_counter() - t
    return calls / (time.perf_counter() - start), lat * 1e3


def _row(name: str, rate: float, lat: np.ndarray, per: str = "calls") -> str:
    p50, p99, mx = np.percentile(lat, [50, 99, 100])
    return f"| {name:<36} | {rate:>10,.0f} {per:<6}/s | {p50:>7.3f} | {p99:>7.3f} | {mx:>7.2f} |"


def _drop(client: redis.Redis, prefix: str) -> int:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for s in range(0, len(keys), 5000):
        client.delete(*keys[s:s + 5000])
    return len(keys)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    client = redis.Redis(host=a.host, port=a.port)
    client.ping()
    store = RedisStore(client, RedisKeys(a.prefix))
    try:
        t = time.perf_counter()
        items, users = write_model(store, a)
        t_write = time.perf_counter() - t
        serving = ServingClient(client, a.prefix, refresh_s=1.0, reload_items_s=None)
        t = time.perf_counter()
        cache = serving.refresh()
        t_load = time.perf_counter() - t
        rng = np.random.default_rng(1)
        order = [users[j] for j in rng.integers(0, len(users), a.calls)]
        for u in order[:200]:  # warm-up: numba compile/cache load, connection, branch caches
            serving.recommend(u, a.n)
        rec_rate, rec_lat = _latencies(lambda j: serving.recommend(order[j], a.n), a.calls)
        read_rate, read_lat = _latencies(lambda j: serving.read_user_seen_rows(cache, order[j]),
                                         a.calls)
        m = max(1, a.calls // 10)
        sim_ids = [items[j] for j in rng.integers(0, len(items), m)]
        serving.similar_items(sim_ids[0], a.n)
        sim_rate, sim_lat = _latencies(lambda j: serving.similar_items(sim_ids[j], a.n), m)
        new = [{items[i]: float(r) for i, r in zip(rng.integers(0, len(items), 10),
                                                    rng.integers(1, 6, 10), strict=True)}
               for _ in range(m)]
        serving.recommend_for_new_user(new[0], a.n)
        new_rate, new_lat = _latencies(lambda j: serving.recommend_for_new_user(new[j], a.n), m)
        pred_rate, pred_lat = _latencies(lambda j: serving.predict(order[j], sim_ids[j % m]), m)
        nb = max(1, a.calls // a.batch // 4)
        serving.recommend_batch(order[: a.batch], a.n)
        batch_rate, batch_lat = _latencies(
            lambda j: serving.recommend_batch(order[j * a.batch % len(order):][: a.batch], a.n),
            nb)
    finally:
        removed = 0 if a.keep else _drop(client, a.prefix)

    print(f"\nServingClient, {a.mode} model: {a.items:,} items x k={a.rank}, {a.users:,} users "
          f"with ~{a.seen} seen items, n={a.n}, one thread, Redis {a.host}:{a.port} "
          f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)")
    print(f"model written in {t_write:.2f} s; cache load (SMEMBERS + vectors + counts) "
          f"{t_load * 1e3:.0f} ms")
    print(f"| {'operation':<36} | {'rate':>17} | p50 ms  | p99 ms  | max ms  |")
    print(f"|{'-' * 38}|{'-' * 19}|---------|---------|---------|")
    print(_row("recommend (excl. seen, incl. Redis)", rec_rate, rec_lat))
    print(_row("  of which user read (HMGET+HKEYS)", read_rate, read_lat))
    print(_row("similar_items", sim_rate, sim_lat))
    print(_row("recommend_for_new_user (10 items)", new_rate, new_lat))
    print(_row("predict", pred_rate, pred_lat))
    print(_row(f"recommend_batch ({a.batch} users)", batch_rate * a.batch, batch_lat / a.batch,
               per="users") + "  (latency per user)")
    p99 = float(np.percentile(rec_lat, 99))
    ok = rec_rate >= GOAL_RATE and p99 <= GOAL_P99_MS
    print(f"goal recommend >= {GOAL_RATE:,.0f}/s and p99 <= {GOAL_P99_MS} ms: "
          f"{'met' if ok else 'NOT met'} ({rec_rate:,.0f}/s, p99 {p99:.2f} ms)")
    if not a.keep:
        print(f"removed {removed:,} keys under {a.prefix}:")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
