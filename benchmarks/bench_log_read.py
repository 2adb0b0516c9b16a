"""Throughput of the Cassandra ratings log and of a factor snapshot round trip.

Writes ``--rows`` synthetic ratings as worker-sized micro-batches, reads them back with
``iter_log`` (goal >= 1M ratings/s), then writes and reads a ``--vectors`` x ``--rank``
snapshot (goal: read incl. loading into Redis <= 10 s). Uses its own keyspace, dropped at the
end unless ``--keep``.

    python benchmarks/bench_log_read.py                       # 2M ratings, 165k vectors
    python benchmarks/bench_log_read.py --rows 20000000 --no-snapshot
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from online_als.factors import Factors
from online_als.ratings import Ratings, object_ids
from worker.config import CassandraSettings, RedisSettings
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.keys import FIELD_BIAS, FIELD_FACTORS, RedisKeys

Row = tuple[str, float, str]


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=5000, help="ratings per append (worker batch)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--chunk-rows", type=int, default=1_000_000)
    p.add_argument("--writers", type=int, default=4, help="threads appending (one per partition)")
    p.add_argument("--users", type=int, default=160_000)
    p.add_argument("--items", type=int, default=40_000)
    p.add_argument("--vectors", type=int, default=165_000)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--no-snapshot", action="store_true")
    p.add_argument("--no-redis", action="store_true", help="skip loading the snapshot into Redis")
    p.add_argument("--host", default=os.environ.get("ONLINE_ALS_CASSANDRA__HOSTS", "127.0.0.1"))
    p.add_argument("--port", type=int, default=9042)
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--protocol", type=int, default=4, help="CQL protocol version (0: negotiate)")
    p.add_argument("--keyspace", default=f"bench_log_{os.getpid()}")
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _write_log(store: CassandraStore, topic: str, a: argparse.Namespace) -> int:
    """Append worker-sized batches, one thread per partition like one worker each."""
    users = [f"user{j}" for j in range(a.users)]
    items = [f"item{j}" for j in range(a.items)]
    per_part = -(-a.rows // a.partitions)

    def write_partition(p: int) -> int:
        rng = np.random.default_rng(p)
        done = 0
        while done < per_part:
            n = min(a.batch, per_part - done)
            u = rng.integers(0, a.users, n)
            i = rng.integers(0, a.items, n)
            vals = rng.integers(1, 11, n).astype(np.float32) / 2
            ts = 1.7e9 + np.arange(done, done + n, dtype=np.float64)
            offs = np.arange(done, done + n, dtype=np.int64)
            store.append_log_blocks(topic, p, done, done + n - 1, Ratings(
                object_ids([users[j] for j in u.tolist()]),
                object_ids([items[j] for j in i.tolist()]), vals, ts, None, None, offs))
            done += n
        return done

    with ThreadPoolExecutor(max_workers=a.writers) as pool:
        return sum(pool.map(write_partition, range(a.partitions)))


def _read_log(store: CassandraStore, topic: str, chunk_rows: int) -> tuple[int, int, float]:
    """(ratings, chunks, checksum) of a full read, touching every column like a retrain."""
    total = chunks = 0
    check = 0.0
    for chunk in store.iter_log(topic, None, chunk_rows):
        assert len(chunk.offsets) <= chunk_rows
        total += len(chunk.offsets)
        chunks += 1
        check += float(chunk.values.sum()) + len(chunk.user_ids[-1]) + len(chunk.item_ids[-1])
    return total, chunks, check


def _cassandra_pid() -> int | None:
    """The local Cassandra's pid (from /proc), to split CPU between client and server."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if b"CassandraDaemon" in fh.read():
                        return int(entry)
            except OSError:
                continue
    return None


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _timed_read(store: CassandraStore, topic: str, chunk_rows: int, written: int,
                label: str) -> Row:
    """Wall rate, plus client and server CPU: on a shared machine the wall time mostly
    measures the other tenants, CPU seconds per rating do not."""
    server = _cassandra_pid()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    srv0, cpu0, start = _cpu_seconds(server), time.process_time(), time.perf_counter()
    got, chunks, _ = _read_log(store, topic, chunk_rows)
    secs, cpu = time.perf_counter() - start, time.process_time() - cpu0
    srv = _cpu_seconds(server) - srv0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert got == written, (got, written)
    detail = (f"{got:,} in {secs:.2f} s, {chunks} chunks <= {chunk_rows:,}, "
              f"+{(rss1 - rss0) / 1024:.0f} MiB RSS; CPU client {cpu:.2f} s")
    if server is not None:
        bound = got / max(cpu, srv, 1e-9)
        detail += f", server {srv:.2f} s -> {bound / 1e6:.1f}M/s with a core each"
    return (f"log read, {label}", got / secs, detail)


def _load_redis(ids: list[str], factors: np.ndarray, biases: np.ndarray, port: int) -> float:
    """Seconds to HSET every vector under a throwaway prefix (then deleted), pipelined."""
    from worker.stores.redis.store import connect

    client = connect(RedisSettings.model_validate({"port": port}))
    keys = RedisKeys(f"bench_cs_{os.getpid()}")
    start = time.perf_counter()
    f = np.ascontiguousarray(factors, dtype="<f4")
    b = np.ascontiguousarray(biases, dtype="<f4")
    step = 5000
    for s in range(0, len(ids), step):
        pipe = client.pipeline(transaction=False)
        for r in range(s, min(s + step, len(ids))):
            pipe.hset(keys.user(1, ids[r]), mapping={FIELD_FACTORS: f[r].tobytes(),
                                                     FIELD_BIAS: b[r].tobytes()})
        pipe.sadd(keys.user_index(1), *ids[s:s + step])
        pipe.execute()
    elapsed = time.perf_counter() - start
    for batch in _batched(list(client.scan_iter(match=keys.version_pattern(1), count=5000)), 5000):
        client.delete(*batch)
    return elapsed


def _batched(items: list[bytes], n: int) -> list[list[bytes]]:
    return [items[s:s + n] for s in range(0, len(items), n)]


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    settings = CassandraSettings.model_validate(
        {"hosts": a.host, "port": a.port, "keyspace": a.keyspace})
    table: list[Row] = []
    with CassandraStore(settings, protocol_version=a.protocol or None) as store:
        store.migrate()
        try:
            topic = "bench"
            start = time.perf_counter()
            written = _write_log(store, topic, a)
            secs = time.perf_counter() - start
            table.append((f"log write ({a.writers} threads, {a.batch}/append)", written / secs,
                          f"{written:,} ratings in {secs:.2f} s"))
            for label in ("#1 (just written)", "#2"):
                table.append(_timed_read(store, topic, a.chunk_rows, written, label))
            if not a.no_snapshot:
                table.extend(_snapshot(store, a))
        finally:
            if not a.keep:
                store.drop_keyspace()
    print(f"\nprotocol v{store.protocol_version}, keyspace {a.keyspace}\n")
    print(f"{'operation':<44} {'rate /s':>14}  detail")
    print("-" * 100)
    for name, rate, detail in table:
        print(f"{name:<44} {rate:>14,.0f}  {detail}")
    return 0


def _snapshot(store: CassandraStore, a: argparse.Namespace) -> list[Row]:
    rng = np.random.default_rng(7)
    ids = [f"user{j}" for j in range(a.vectors)]
    factors = rng.standard_normal((a.vectors, a.rank), dtype=np.float32)
    biases = rng.standard_normal(a.vectors, dtype=np.float32)
    rows: list[Row] = []
    secs = _timed(lambda: store.write_factors(1, "u", Factors(ids, factors, biases)))
    rows.append((f"snapshot write ({a.vectors:,} x k={a.rank})", a.vectors / secs, f"{secs:.2f} s"))
    out: list[Factors] = []
    secs = _timed(lambda: out.append(store.read_factors(1, "u")))
    got_ids, got_f, got_b = out[0].id_list(), out[0].vectors, out[0].biases
    assert got_ids == ids and np.array_equal(got_f, factors) and np.array_equal(got_b, biases)
    rows.append(("snapshot read from Cassandra", a.vectors / secs, f"{secs:.2f} s (goal <= 10 s)"))
    if not a.no_redis:
        redis_s = _load_redis(got_ids, got_f, got_b, a.redis_port)
        rows.append(("  + HSET into Redis (pipelined)", a.vectors / redis_s,
                     f"{redis_s:.2f} s; total {secs + redis_s:.2f} s"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
