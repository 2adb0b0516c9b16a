"""End-to-end implicit retrain (``run_retrain``) vs a bare ``implicit`` fit of the same matrix.

Setup (not timed as part of the retrain): a synthetic ML-20M-shaped implicit stream
(``producers.synthetic``) is produced to a fresh Kafka topic, one partition per
``user % partitions`` in stream order, so partition ``p`` holds offsets ``0..n_p-1``; the same
events are then written to the Cassandra ratings log at the same offsets with
``append_log_blocks``. A serving version is bootstrapped in Redis whose checkpoints are the
log's end (the cutoff), so the retrain's catch-up replays exactly the holdout (offsets from
the holdout boundary to the cutoff; ``retrain.holdout_fraction``, the product's default unless
``--holdout``) from Kafka, as it would in production. The archiver (``archive.snapshot_interval_s``)
keeps stream snapshots of the serving version, and the gate rebuilds the serving version as of
the holdout boundary from the newest one at or before it; setup stores that snapshot (at the
boundary, as the archiver would have; ``--no-stream-snapshot``: none, so the gate replays the
whole log through the online kernels, the worst case). The gate's margin is wide open so that
every run times the load and the catch-up (the gate costs the same whatever it decides).

Measured, in one run:

* bare fit: ``implicit.als.AlternatingLeastSquares`` (same factors, regularization,
  iterations, threads, CG solver) on the very training matrix the retrain fits (the
  pre-boundary events, rows in the same order); by default once before and once after the
  retrain, to bracket the drift of a shared machine's load;
* end to end: ``run_retrain`` = read (Cassandra log -> CSR) + fit + evaluate (holdout
  nDCG@10) + snapshot (factors to Cassandra) + load (vectors, seen-hashes, Grams into Redis)
  + catch-up (replay the holdout from Kafka through the online kernels) + switch.

Goal: end to end <= 1.5x the bare fit. Everything it creates (keyspace, Redis prefix,
topic, consumer group) is deleted at the end unless ``--keep``.

    python benchmarks/bench_retrain_e2e.py                  # 20M events, k=64, 15 iterations
    python benchmarks/bench_retrain_e2e.py --iterations 5   # shorter
    python benchmarks/bench_retrain_e2e.py --events 5000000 --bare-runs 1
    python benchmarks/bench_retrain_e2e.py --scale 0.25    # 5M events, users x 0.25
    python benchmarks/bench_retrain_e2e.py --quick          # smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import implicit.cpu.als  # loads its BLAS now, so both fits' 1-thread BLAS limit covers it
import numpy as np
from _common import fmt_rate, goal_mark, header, load_average, table, write_json
from threadpoolctl import threadpool_limits

import worker.runtime.loop  # noqa: F401 - catch_up imports it lazily: load it at start
from online_als.events import ImplicitEventMap
from online_als.ratings import Ratings
from online_als.retrain.matrix import RatingMatrix, build_matrix
from producers.synthetic import ML20M, generate
from worker.config import Settings, load_config
from worker.control.retrain_job import _boundaries, run_retrain
from worker.events import encode_binary
from worker.stores import kafka as kafka_io
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.store import RedisStore

GOAL_RATIO = 1.5
QUICK = {"events": 300_000, "users": 20_000, "items": 5_000, "iterations": 3}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=ML20M["n_events"])
    p.add_argument("--users", type=int, default=ML20M["n_users"])
    p.add_argument("--items", type=int, default=ML20M["n_items"])
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="implicit's threads (0 = all cores)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--holdout", type=float, default=None,
                   help="retrain.holdout_fraction (default: the product's default)")
    p.add_argument("--bare-runs", type=int, default=2,
                   help="bare fits: 1 = before the retrain, 2 = before and after")
    p.add_argument("--scale", type=float, default=1.0,
                   help="shrink the ML-20M shape: events and users times this, items kept (the "
                        "events per user, so each seen-hash and each user's solve, stay the same)")
    p.add_argument("--no-stream-snapshot", action="store_true",
                   help="no stream snapshot of the serving version (the gate replays the log)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--block", type=int, default=20_000, help="ratings per append_log_blocks call")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK} unless given explicitly")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep keyspace, Redis keys and topic")
    p.add_argument("--verbose", action="store_true", help="log the retrain's phases as they end")
    a = p.parse_args(argv)
    if a.scale != 1.0:
        a.events, a.users = int(a.events * a.scale), max(1, int(a.users * a.scale))
    if a.quick:
        given = {x.split("=")[0].lstrip("-").replace("-", "_") for x in (argv or sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in given:
                setattr(a, k, v)
    return a


def _settings(a: argparse.Namespace, tag: str) -> Settings:
    return load_config(overrides={
        "kafka.topic": f"bench_{tag}", "kafka.dead_letter_topic": f"bench_{tag}.dlq",
        "kafka.group_id": f"bench_{tag}", "kafka.partitions": a.partitions,
        "redis.key_prefix": f"bench_{tag}", "cassandra.keyspace": f"bench_{tag}",
        "cassandra.enabled": True, "metrics.port": 0,
        "model.mode": "implicit", "model.rank": a.factors, "model.seed": a.seed,
        "retrain.iterations": a.iterations, "retrain.min_new_ratings": 0,
        "retrain.gate_margin": 1e9,
        **({"retrain.holdout_fraction": a.holdout} if a.holdout is not None else {}),
    }, environ={})


# -- synthetic stream ------------------------------------------------------------------
@dataclass
class Stream:
    users: np.ndarray  # <U strings, stream order
    items: np.ndarray
    events: np.ndarray
    weights: np.ndarray  # float32, the worker's event map
    ts: np.ndarray  # int64 unix seconds
    parts: np.ndarray  # int32 Kafka partition of each event
    offsets: np.ndarray  # int64 offset of each event in its partition
    by_part: list[np.ndarray] = field(default_factory=list)  # stream positions per partition

    @property
    def counts(self) -> dict[int, int]:
        return {p: len(ix) for p, ix in enumerate(self.by_part)}


def make_stream(a: argparse.Namespace, settings: Settings) -> Stream:
    chunks = list(generate(a.events, a.users, a.items, seed=a.seed, mode="implicit",
                           chunk_rows=1_000_000))
    users = np.concatenate([c.user_ids for c in chunks])
    items = np.concatenate([c.item_ids for c in chunks])
    events = np.concatenate([c.events for c in chunks])  # type: ignore[misc]
    ts = np.concatenate([c.timestamps for c in chunks]).astype(np.int64)
    emap = ImplicitEventMap.from_string(settings.model.event_weights)
    weights = np.zeros(len(events), dtype=np.float32)
    for name in np.unique(events).tolist():
        weights[events == name] = emap.weights[name]
    parts = (users.astype(np.int64) % a.partitions).astype(np.int32)
    offsets = np.empty(len(parts), dtype=np.int64)
    by_part = []
    for p in range(a.partitions):
        ix = np.flatnonzero(parts == p)
        offsets[ix] = np.arange(len(ix))
        by_part.append(ix)
    return Stream(users, items, events, weights, ts, parts, offsets, by_part)


def produce(settings: Settings, s: Stream) -> None:
    """Every event to its partition in stream order (offsets 0..n_p-1 on a fresh topic)."""
    topic = settings.kafka.topic
    kafka_io.ensure_topics(settings.kafka, {topic: len(s.by_part)})
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer = kafka_io.make_producer(settings.kafka, **{
        "linger.ms": 50, "batch.size": 1 << 20, "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1 << 20, "on_delivery": on_delivery})
    users, items, events = s.users.tolist(), s.items.tolist(), s.events.tolist()
    ts, parts = s.ts.tolist(), s.parts.tolist()
    for j in range(len(users)):
        value = encode_binary(users[j], items[j], event=events[j], ts=float(ts[j]))
        while True:
            try:
                producer.produce(topic, value=value, key=users[j].encode(), partition=parts[j])
                break
            except BufferError:
                producer.poll(0.05)
        if not j & 0x3FFF:
            producer.poll(0)
    left = producer.flush(300)
    if left or failed:
        raise RuntimeError(f"Kafka produce: {left} undelivered, {len(failed)} failed {failed[:3]}")
    consumer = kafka_io.make_consumer(settings.kafka)
    try:
        marks = kafka_io.high_watermarks(consumer, topic, list(range(len(s.by_part))), 10.0)
    finally:
        consumer.close()
    if marks != s.counts:
        raise RuntimeError(f"Kafka offsets {marks} do not match the stream {s.counts}: "
                           "the topic was not fresh or the producer reordered")


def write_log(cass: CassandraStore, topic: str, s: Stream, block: int) -> None:
    """The same events to the Cassandra log, one writer thread per partition."""
    def one(p: int) -> int:
        ix = s.by_part[p]
        for start in range(0, len(ix), block):
            j = ix[start:start + block]
            cass.append_log_blocks(topic, p, start, start + len(j) - 1, Ratings(
                s.users[j], s.items[j], s.weights[j], s.ts[j], None, None, s.offsets[j]))
        return len(ix)

    with ThreadPoolExecutor(max_workers=len(s.by_part)) as pool:
        list(pool.map(one, range(len(s.by_part))))


def train_matrix(s: Stream, boundary: dict[int, int]) -> RatingMatrix:
    """The matrix the retrain fits: pre-boundary events, partition then offset order."""
    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for p, ix in enumerate(s.by_part):
            train = ix[: boundary[p]]
            for start in range(0, len(train), 1_000_000):
                j = train[start:start + 1_000_000]
                yield s.users[j].astype(object), s.items[j].astype(object), s.weights[j]

    return build_matrix(chunks(), "sum")


def stream_snapshot(settings: Settings, cass: CassandraStore, version: int,
                    at: dict[int, int]) -> None:
    """What the archiver stores: ``version`` materialised from the log up to ``at``."""
    from worker.control.materialize import materialize_at

    mat = materialize_at(cass, settings, version, at)
    arr = mat.arrays()
    cass.archive.write_snapshot(version, mat.offsets, arr.users, arr.items)


# -- measurements ----------------------------------------------------------------------
def bare_fit(matrix: RatingMatrix, settings: Settings, a: argparse.Namespace) -> dict[str, Any]:
    """``implicit``'s own model, configured as ``online_als.retrain.fit_implicit`` does."""
    csr = matrix.matrix.tocsr()
    load0, cpu0 = load_average(), time.process_time()
    with threadpool_limits(1, "blas"):  # implicit's advice; fit_implicit does the same
        model = implicit.als.AlternatingLeastSquares(
            factors=a.factors, regularization=settings.model.implicit_regularization,
            alpha=1.0, iterations=a.iterations, num_threads=a.threads,
            random_state=settings.model.seed, dtype=np.float32, use_cg=True)
        start = time.perf_counter()
        model.fit(csr, show_progress=False)
        secs = time.perf_counter() - start
    return {"seconds": secs, "cpu_s": time.process_time() - cpu0, "load_before": load0,
            "load_after": load_average()}


def redis_run_id(store: RedisStore) -> str:
    """Changes when the Redis server restarts (it keeps no data here): the run is void then."""
    return str(store.client.info("server")["run_id"])  # type: ignore[index]


def e2e(settings: Settings, cass: CassandraStore, store: RedisStore,
        serving: int) -> dict[str, Any]:
    if store.current_version() != serving:
        raise RuntimeError("the serving version vanished before the retrain (Redis restarted "
                           "or its keys were deleted by someone else); run again")
    cpu: dict[str, float] = {}
    loads: dict[str, str] = {}
    last = [time.process_time()]

    def observe(phase: str, _secs: float) -> None:
        now = time.process_time()
        cpu[phase], last[0] = now - last[0], now
        loads[phase] = load_average()

    load0 = load_average()
    start = time.perf_counter()
    report = run_retrain(settings, cass, store, force=True, observe=observe)
    wall = time.perf_counter() - start
    if report.outcome != "promoted":
        raise RuntimeError(f"retrain {report.outcome}: {report.reason}")
    if report.version == serving or store.current_version() != report.version:
        raise RuntimeError("Redis lost the serving version during the retrain; run again")
    return {"wall_s": wall, "phases": dict(report.seconds), "cpu_s": cpu, "loads": loads,
            "load_before": load0, "report": report.to_dict()}


def cleanup(settings: Settings, store: RedisStore | None, cass: CassandraStore | None,
            version: int | None) -> None:
    if cass is not None:
        cass.drop_keyspace()
    if store is not None:
        batch: list[bytes] = []
        for key in store.client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=10000):
            batch.append(key)
            if len(batch) >= 10000:
                store.client.unlink(*batch)
                batch = []
        if batch:
            store.client.unlink(*batch)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_io.client_config(settings.kafka))
    for fut in admin.delete_topics([settings.kafka.topic], operation_timeout=30).values():
        try:
            fut.result(60)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on
            print(f"(could not delete topic {settings.kafka.topic}: {exc})", file=sys.stderr)
    if version is not None:
        groups = [f"{settings.kafka.group_id}-retrain-{version}"]
        for fut in admin.delete_consumer_groups(groups, request_timeout=30).values():
            with contextlib.suppress(Exception):  # the group may never have committed
                fut.result(60)


# -- report ----------------------------------------------------------------------------
def print_tables(a: argparse.Namespace, info: dict[str, Any]) -> None:
    r, bare, rep = info["e2e"], info["bare"], info["e2e"]["report"]
    bare_s = [b["seconds"] for b in bare]
    ref = statistics.mean(bare_s)
    ratio = r["wall_s"] / ref
    info["ratio"], info["goal_met"] = ratio, ratio <= GOAL_RATIO
    print(f"\nimplicit retrain of {info['events']:,} synthetic events ({info['users']:,} users x "
          f"{info['items']:,} items), k={a.factors}, {a.iterations} iterations, "
          f"{a.threads or os.cpu_count()} threads, {a.partitions} partitions, holdout "
          f"{a.holdout:g}: train matrix {info['train_nnz']:,} nnz from "
          f"{rep['train_ratings']:,} ratings, holdout {rep['holdout_ratings']:,}, "
          f"replayed {rep['replayed_events']:,}")
    n_read = rep["train_ratings"] + rep["holdout_ratings"]
    notes = {"read": f"{fmt_rate(n_read / max(r['phases'].get('read', 0), 1e-9))} "
                     "(Cassandra log -> CSR)",
             "evaluate": "serving version at the boundary + both nDCG@10",
             "load": "vectors, seen-hashes, Grams -> Redis",
             "catchup": f"{fmt_rate(rep['replayed_events'] / max(r['phases'].get('catchup', 0), 1e-9))}"
                        " (Kafka replay of the holdout)"}
    rows: list[list[Any]] = []
    for phase, secs in r["phases"].items():
        rows.append([f"e2e: {phase}", f"{secs:.2f}", f"{secs / r['wall_s']:.1%}",
                     f"{r['cpu_s'].get(phase, 0.0):.1f}", f"{secs / ref:.2f}x",
                     r["loads"].get(phase, ""), notes.get(phase, "")])
    rows.append(["**e2e: total (run_retrain)**", f"**{r['wall_s']:.2f}**", "100%",
                 f"{sum(r['cpu_s'].values()):.1f}", f"**{ratio:.2f}x**", info["load_after_e2e"],
                 f"goal <= {GOAL_RATIO}x the bare fit: {goal_mark(ratio <= GOAL_RATIO)}"])
    for j, b in enumerate(bare):
        rows.append([f"bare implicit fit ({'before' if j == 0 else 'after'} e2e)",
                     f"{b['seconds']:.2f}", "", f"{b['cpu_s']:.1f}", f"{b['seconds'] / ref:.2f}x",
                     b["load_after"], f"load before: {b['load_before']}"])
    table(["step", "wall s", "share of e2e", "CPU s (this process)", "x bare fit (mean)",
           "load after", "note"], rows, "End-to-end retrain vs bare implicit fit")
    setup = info["setup"]
    table(["setup step", "seconds", "rate"], [
        ["generate (producers.synthetic)", f"{setup['generate']:.1f}",
         fmt_rate(info["events"] / setup["generate"])],
        ["produce to Kafka (binary events)", f"{setup['produce']:.1f}",
         fmt_rate(info["events"] / setup["produce"])],
        ["append_log_blocks to Cassandra", f"{setup['log']:.1f}",
         fmt_rate(info["events"] / setup["log"])],
        ["stream snapshot of the serving version at the boundary (as the archiver stores)",
         f"{setup['stream_snapshot']:.1f}" if "stream_snapshot" in setup else "none (worst case)",
         ""],
    ], "Setup (before the measurements)")
    rest = r["wall_s"] - r["phases"].get("fit", 0.0)
    print(f"\nfit phase / bare fit = {r['phases'].get('fit', 0.0) / ref:.2f}x; everything but "
          f"the fit = {rest:.1f} s = {rest / ref:.2f}x the bare fit; load at the end "
          f"{load_average()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    tag = f"re2e_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    settings = _settings(a, tag)
    a.holdout = settings.retrain.holdout_fraction
    info: dict[str, Any] = {"machine": header("bench_retrain_e2e", a), "setup": {}}
    store: RedisStore | None = None
    cass: CassandraStore | None = None
    version: int | None = None
    try:
        t = time.perf_counter()
        s = make_stream(a, settings)
        info["setup"]["generate"] = time.perf_counter() - t
        info["events"] = len(s.users)
        info["users"] = len(np.unique(s.users))
        info["items"] = len(np.unique(s.items))
        print(f"[{load_average()}] generated {len(s.users):,} events in "
              f"{info['setup']['generate']:.1f} s; producing to Kafka", flush=True)
        t = time.perf_counter()
        produce(settings, s)
        info["setup"]["produce"] = time.perf_counter() - t
        print(f"[{load_average()}] produced in {info['setup']['produce']:.1f} s; writing the "
              "Cassandra log", flush=True)
        cass = CassandraStore(settings.cassandra)
        cass.migrate()
        t = time.perf_counter()
        write_log(cass, settings.kafka.topic, s, a.block)
        info["setup"]["log"] = time.perf_counter() - t
        for p, n in s.counts.items():  # what the archiver records after writing the blocks
            cass.archive.advance(settings.kafka.topic, int(p), None, 0, int(n))
        cutoff = cass.contiguous_offsets(settings.kafka.topic)
        if cutoff != s.counts:
            raise RuntimeError(f"log ends at {cutoff}, expected {s.counts}")
        store = RedisStore.from_settings(settings.redis)
        from worker.control import lifecycle

        serving = lifecycle.bootstrap(settings, store, cass)
        store.set_checkpoints(serving, settings.kafka.topic, cutoff)
        boundary = _boundaries(cutoff, a.holdout, settings.retrain.holdout_min_events)
        if not a.no_stream_snapshot:
            t = time.perf_counter()
            stream_snapshot(settings, cass, serving, boundary)
            info["setup"]["stream_snapshot"] = time.perf_counter() - t
        matrix = train_matrix(s, boundary)
        info["train_nnz"] = int(matrix.matrix.nnz)
        del s
        print(f"[{load_average()}] log written in {info['setup']['log']:.1f} s; bare fit", flush=True)
        info["bare"] = [bare_fit(matrix, settings, a)]
        print(f"[{load_average()}] bare fit {info['bare'][0]['seconds']:.1f} s; end-to-end retrain",
              flush=True)
        run_id = redis_run_id(store)
        info["e2e"] = e2e(settings, cass, store, serving)
        if redis_run_id(store) != run_id:
            raise RuntimeError("Redis restarted during the retrain (another user); run again")
        version = info["e2e"]["report"]["version"]
        if info["e2e"]["report"]["train_ratings"] != matrix.events:
            raise RuntimeError("the retrain fitted a different matrix than the bare fit")
        info["load_after_e2e"] = load_average()
        print(f"[{load_average()}] e2e {info['e2e']['wall_s']:.1f} s", flush=True)
        for _ in range(1, a.bare_runs):
            info["bare"].append(bare_fit(matrix, settings, a))
        info["load_end"] = load_average()
        print_tables(a, info)
    finally:
        if not a.keep:
            cleanup(settings, store, cass, version)
        if cass is not None:
            cass.close()
    write_json(a.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
