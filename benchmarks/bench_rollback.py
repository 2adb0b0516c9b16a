"""Rollback latency: from Cassandra (version not resident in Redis) and resident.

A model the size of MovieLens 20M's (138,493 users + 26,744 items = 165,237 vectors, k=64,
implicit mode) is persisted to Cassandra as model versions, then ``worker.cli.ops_cli.rollback``
is timed (its ``seconds``: from the call to the pointer switch, the figure the CLI prints):

* from Cassandra: the target's namespace is not in Redis, so rollback reads its factors from
  Cassandra, rebuilds its seen-hashes from the ratings log up to its cutoff, writes vectors,
  seen-hashes, popularity counts, Grams and checkpoints into Redis, then switches. Measured
  with an empty log (cutoff 0) and with a small log (``--log-events`` up to the cutoff).
  Goal <= 10 s.
* resident: both versions' namespaces are in Redis; ``--switches`` alternating rollbacks.
  Goal <= 10 ms (median and p99). The whole call (with the Cassandra bookkeeping after the
  switch: status CAS and switch record) is shown beside it.

A breakdown of the cold path (Cassandra read, seen-hash rebuild, Redis load) follows.
Everything it creates (keyspace, Redis prefix) is deleted at the end unless ``--keep``.

    python benchmarks/bench_rollback.py
    python benchmarks/bench_rollback.py --quick        # smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _common import goal_mark, header, load_average, table, write_json

from online_als.factors import Factors, ModelArrays
from online_als.ratings import Ratings
from online_als.retrain.matrix import build_matrix
from producers.synthetic import ML20M
from worker.config import Settings, load_config
from worker.control.lifecycle import rollback
from worker.stores.cassandra.store import CassandraStore, ModelVersion
from worker.stores.redis.bulk_load import delete_namespace, load_version
from worker.stores.redis.store import RedisStore

GOAL_COLD_S = 10.0
GOAL_RESIDENT_MS = 10.0
QUICK = {"users": 20_000, "items": 5_000, "log_events": 20_000, "switches": 30, "cold_runs": 1}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=ML20M["n_users"])
    p.add_argument("--items", type=int, default=ML20M["n_items"])
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--log-events", type=int, default=1_000_000,
                   help="ratings in the 'small log' case (0: only the empty-log case)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--cold-runs", type=int, default=3, help="rollbacks from Cassandra per case")
    p.add_argument("--switches", type=int, default=100, help="resident rollbacks")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK} unless given")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the keyspace and Redis keys")
    a = p.parse_args(argv)
    if a.quick:
        given = {x.split("=")[0].lstrip("-").replace("-", "_") for x in (argv or sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in given:
                setattr(a, k, v)
    return a


def _settings(tag: str, rank: int) -> Settings:
    return load_config(overrides={
        "kafka.topic": f"bench_{tag}", "kafka.group_id": f"bench_{tag}",
        "redis.key_prefix": f"bench_{tag}", "cassandra.keyspace": f"bench_{tag}",
        "cassandra.enabled": True, "metrics.port": 0,
        "model.mode": "implicit", "model.rank": rank,
    }, environ={})


def _model(a: argparse.Namespace, seed: int) -> ModelArrays:
    rng = np.random.default_rng(seed)
    return ModelArrays(
        "implicit",
        Factors([str(j + 1) for j in range(a.users)],
                rng.standard_normal((a.users, a.rank), dtype=np.float32) * 0.1,
                np.zeros(a.users, dtype=np.float32)),
        Factors([str(j + 1) for j in range(a.items)],
                rng.standard_normal((a.items, a.rank), dtype=np.float32) * 0.1,
                np.zeros(a.items, dtype=np.float32)))


def persist(cass: CassandraStore, store: RedisStore, topic: str, m: ModelArrays,
            cutoff: dict[int, int], note: str) -> int:
    """A promoted version in Cassandra only (nothing of it in Redis)."""
    version = store.allocate_version()
    cass.create_version(ModelVersion(
        version=version, status="building", mode=m.mode, rank=m.rank, topic=topic,
        params={"global_mean": m.global_mean}, cutoff=cutoff,
        counts={"users": len(m.users), "items": len(m.items)}, notes=note))
    cass.write_factors(version, "u", m.users)
    cass.write_factors(version, "i", m.items)
    cass.set_version_status(version, "ready", "", expected_status="building")
    cass.set_version_status(version, "promoted", "", expected_status="ready")
    return version


def write_log(cass: CassandraStore, topic: str, a: argparse.Namespace) -> dict[int, int]:
    """``--log-events`` implicit ratings over the model's ids; returns the cutoff."""
    rng = np.random.default_rng(3)
    n = a.log_events
    users = rng.integers(1, a.users + 1, n)
    items = rng.integers(1, a.items + 1, n)
    weights = rng.choice(np.array([1.0, 4.0, -4.0], dtype=np.float32), n, p=[0.7, 0.2, 0.1])
    parts = users % a.partitions
    cutoff: dict[int, int] = {}
    for p in range(a.partitions):
        ix = np.flatnonzero(parts == p)
        for s in range(0, len(ix), 20_000):
            j = ix[s:s + 20_000]
            cass.append_log_blocks(topic, p, s, s + len(j) - 1, Ratings(
                users[j], items[j], weights[j], np.full(len(j), 1.7e9), None, None,
                np.arange(s, s + len(j))))
        cutoff[p] = len(ix)
    return cutoff


def cold_rollbacks(settings: Settings, cass: CassandraStore, store: RedisStore, home: int,
                   target: int, runs: int) -> list[dict[str, Any]]:
    """Roll back to ``target`` (dropped from Redis first) and forward to ``home`` again."""
    out = []
    for _ in range(runs):
        delete_namespace(store, target)
        load0 = load_average()
        t = time.perf_counter()
        r = rollback(settings, cass, store, target, "bench rollback from Cassandra")
        call = time.perf_counter() - t
        assert r["loaded_from_cassandra"] and store.current_version() == target, r
        out.append({"seconds": r["seconds"], "call_s": call, "load_before": load0,
                    "load_after": load_average()})
        back = rollback(settings, cass, store, home, "bench: forward again")
        assert not back["loaded_from_cassandra"]
    return out


def resident_rollbacks(settings: Settings, cass: CassandraStore, store: RedisStore,
                       versions: tuple[int, int], n: int) -> dict[str, Any]:
    switch_ms, call_ms = [], []
    load0 = load_average()
    for j in range(n):
        v = versions[j % 2]
        t = time.perf_counter()
        r = rollback(settings, cass, store, v, "bench resident rollback")
        call_ms.append((time.perf_counter() - t) * 1000)
        assert not r["loaded_from_cassandra"] and store.current_version() == v, r
        switch_ms.append(r["seconds"] * 1000)
    return {"switch_ms": switch_ms, "call_ms": call_ms, "load_before": load0,
            "load_after": load_average()}


def breakdown(settings: Settings, cass: CassandraStore, store: RedisStore,
              version: int) -> dict[str, float]:
    """The cold path in steps (what ``restore.load_from_cassandra`` does), namespace dropped."""
    from online_als.idmap import IdMap

    meta = cass.get_version(version)
    assert meta is not None
    delete_namespace(store, version)
    out: dict[str, float] = {}
    t = time.perf_counter()
    users, items = cass.read_factors(version, "u"), cass.read_factors(version, "i")
    uids, iids = users.id_list(), items.id_list()
    out["read factors from Cassandra"] = time.perf_counter() - t
    t = time.perf_counter()
    chunks = cass.iter_log(settings.kafka.topic, dict(meta.cutoff), settings.retrain.chunk_rows)
    hist = build_matrix(chunks, "sum", users=IdMap.from_list(uids), items=IdMap.from_list(iids))
    m = hist.matrix.tocsr()[: len(uids), : len(iids)].tocsr()
    out[f"read log + build seen matrix ({hist.events:,} events)"] = time.perf_counter() - t
    model = ModelArrays(meta.mode, users, items, 0.0)
    t = time.perf_counter()
    delete_namespace(store, version)  # nothing left to delete: the cost is the SCAN alone
    scan = time.perf_counter() - t
    t = time.perf_counter()
    load_version(store, version, model, item_counts=np.diff(m.tocsc().indptr).astype(np.int64),
                 checkpoints=dict(meta.cutoff), topic=settings.kafka.topic,
                 implicit_reg=settings.model.foldin_regularization, source="bench",
                 seen=(m.indptr, m.indices, m.data))
    out["load into Redis (load_version: SCAN, vectors, seen, Grams)"] = time.perf_counter() - t
    out[f"  load_version's delete_namespace: SCAN of {store.client.dbsize():,} Redis keys"] = scan
    return out


def resident_parts(cass: CassandraStore, store: RedisStore, version: int,
                   n: int) -> dict[str, list[float]]:
    """ms of the steps of a resident rollback before its switch, each repeated ``n`` times."""
    out: dict[str, list[float]] = {"Cassandra get_version": [], "Redis read_meta": [],
                                   "Redis compare_and_switch (CAS + log)": []}
    for _ in range(n):
        t = time.perf_counter()
        cass.get_version(version)
        t1 = time.perf_counter()
        store.read_meta(version)
        t2 = time.perf_counter()
        store.compare_and_switch(store.current_version(), version, "bench resident parts", "bench")
        t3 = time.perf_counter()
        for key, dt in zip(out, (t1 - t, t2 - t1, t3 - t2), strict=True):
            out[key].append(dt * 1000)
    return out


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _verdict(med: float, worst: float, goal: float) -> str:
    if worst <= goal:
        return goal_mark(True)
    return goal_mark(False) + (" (median met)" if med <= goal else "")


def print_tables(a: argparse.Namespace, info: dict[str, Any]) -> None:
    print(f"\nrollback of a {a.users + a.items:,}-vector model ({a.users:,} users + "
          f"{a.items:,} items), k={a.rank}, implicit; Redis held {info['dbsize']:,} keys in all "
          "(every tenant's), which load_version's SCAN walks")
    rows: list[list[Any]] = []
    for case in info["cold"]:
        secs = [r["seconds"] for r in case["runs"]]
        med, worst = float(np.median(secs)), max(secs)
        rows.append([f"from Cassandra, {case['label']}", f"{med:.2f} s", f"{worst:.2f} s (max)",
                     len(secs), f"<= {GOAL_COLD_S:.0f} s", _verdict(med, worst, GOAL_COLD_S),
                     ", ".join(f"{x:.2f}" for x in secs)])
    res = info["resident"]
    med, p99 = float(np.median(res["switch_ms"])), _pct(res["switch_ms"], 99)
    rows.append(["resident (namespace in Redis): call to switch", f"{med:.2f} ms",
                 f"{p99:.2f} ms", len(res["switch_ms"]), f"<= {GOAL_RESIDENT_MS:.0f} ms",
                 _verdict(med, p99, GOAL_RESIDENT_MS), f"max {max(res['switch_ms']):.2f} ms"])
    cmed, cp99 = float(np.median(res["call_ms"])), _pct(res["call_ms"], 99)
    rows.append(["resident, whole call (+ status CAS, switch record)", f"{cmed:.2f} ms",
                 f"{cp99:.2f} ms", len(res["call_ms"]), "", "", "not the goal's figure"])
    for step, ms in info["resident_parts"].items():
        rows.append([f"resident step: {step}", f"{float(np.median(ms)):.2f} ms",
                     f"{_pct(ms, 99):.2f} ms", len(ms), "", "", ""])
    table(["rollback", "median", "p99", "runs", "goal", "status", "runs / note"], rows,
          "Rollback latency")
    total = sum(v for k, v in info["breakdown"].items() if not k.startswith("  "))
    table(["cold path step (" + info["breakdown_label"] + ")", "seconds"],
          [[k.strip() if not k.startswith("  ") else "of which: " + k.strip(), f"{v:.2f}"]
           for k, v in info["breakdown"].items()] + [["total", f"{total:.2f}"]],
          "Where a rollback from Cassandra spends its time")
    print(f"\nload: start {info['machine']['load_average']}, cold {info['cold'][0]['runs'][0]['load_before']}"
          f", resident {res['load_before']} -> {res['load_after']}, end {info['load_end']}")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    logging.basicConfig(level=logging.WARNING)
    tag = f"rb_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    settings = _settings(tag, a.rank)
    topic = settings.kafka.topic
    info: dict[str, Any] = {"machine": header("bench_rollback", a), "cold": []}
    store = RedisStore.from_settings(settings.redis)
    cass = CassandraStore(settings.cassandra)
    run_id = store.client.info("server")["run_id"]  # type: ignore[index]
    try:
        cass.migrate()
        empty = dict.fromkeys(range(a.partitions), 0)
        home_model, old_model = _model(a, 1), _model(a, 2)
        # the serving version: resident in Redis, persisted too
        home = persist(cass, store, topic, home_model, empty, "bench serving")
        load_version(store, home, home_model, checkpoints=empty, topic=topic, source="bench")
        store.compare_and_switch(store.current_version(), home, "bench start", "bench")
        old = persist(cass, store, topic, old_model, empty, "bench rollback target")
        print(f"[{load_average()}] persisted 2 versions; cold rollbacks, empty log", flush=True)
        info["cold"].append({"label": "empty log", "runs": cold_rollbacks(
            settings, cass, store, home, old, a.cold_runs)})
        target, label = old, "empty log"
        if a.log_events:
            t = time.perf_counter()
            cutoff = write_log(cass, topic, a)
            info["log_write_s"] = time.perf_counter() - t
            label = f"log of {a.log_events:,} ratings"
            target = persist(cass, store, topic, old_model, cutoff, "bench target with a log")
            print(f"[{load_average()}] wrote {a.log_events:,} log ratings; cold rollbacks", flush=True)
            info["cold"].append({"label": label, "runs": cold_rollbacks(
                settings, cass, store, home, target, a.cold_runs)})
        # both resident now (the target was loaded by its last cold rollback)
        print(f"[{load_average()}] resident rollbacks", flush=True)
        info["resident"] = resident_rollbacks(settings, cass, store, (target, home), a.switches)
        info["resident_parts"] = resident_parts(cass, store, home, a.switches)
        store.compare_and_switch(store.current_version(), home, "bench breakdown", "bench")
        info["breakdown_label"] = label
        info["breakdown"] = breakdown(settings, cass, store, target)
        info["load_end"] = load_average()
        info["dbsize"] = int(store.client.dbsize())  # type: ignore[arg-type]
        if store.client.info("server")["run_id"] != run_id:  # type: ignore[index]
            raise RuntimeError("Redis restarted during the run (another user); run again")
        print_tables(a, info)
    finally:
        if not a.keep:
            cass.drop_keyspace()
            keys = list(store.client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=10000))
            for s in range(0, len(keys), 10000):
                store.client.unlink(*keys[s:s + 10000])
        cass.close()
    write_json(a.json, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
