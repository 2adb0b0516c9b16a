"""Capacity model: turn the measured per-event and per-object costs into a deployment size.

Inputs (per scenario): events/s, users, items, rank k, seen-history entries per user, model
versions kept, ratings in the log. Outputs: Kafka partitions, worker processes and cores,
Redis memory and shards, Cassandra disk and nodes, retrain time on one node (``implicit`` CPU,
GPU) and on Spark executors. Every measured figure is in ``MEASURED`` with the run it came
from (benchmarks/RESULTS.md, "Issue 15"); ``--scaleout JSON`` / ``--retrain JSON`` replace
them with a new ``bench_scaleout.py --json`` / ``bench_retrain.py --spark ... --json`` run.
``ASSUMED`` lists what is not measured here (headroom, shard and node sizes, GPU speed-up).
Scaling rules: CPU and bytes linear in events and objects (measured per unit at k=64; vector
bytes scale with k, fit time with nnz·k²/64²); Spark linear in cores (no shuffle model).

    python benchmarks/capacity.py                    # the three worked examples
    python benchmarks/capacity.py --events-per-s 50000 --users 5e6 --items 2e5 --ratings 1e9
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

MEASURED: dict[str, float] = {
    # bench_scaleout.py --events 300000 --cassandra 100000: one worker, 6 partitions,
    # 3-master Redis Cluster, k=64, ML-20M-shaped stream (RESULTS.md, issue 15)
    "worker_cpu_s_per_1k": 0.385,
    "redis_cpu_s_per_1k": 0.082,  # the three masters together
    "kafka_cpu_s_per_1k": 0.030,
    "redis_bytes_user_vector": 1167,  # MEMORY USAGE incl. bookkeeping + the id-set share
    "redis_bytes_item_vector": 1336,
    "redis_bytes_seen_entry": 54,
    "redis_bytes_version_fixed": 1504,
    "cassandra_bytes_per_rating": 31.5,  # payload, before LZ4 and SSTable overhead
    "cassandra_bytes_per_vector": 266.0,
    # bench_retrain.py --spark ml-1m,ml-20m --scale 0.25 --iterations 5: implicit, k=64,
    # 4.6M nnz at the ML-20M shape, s/iteration per 1M nnz on 2 cores (RESULTS.md, issue 15)
    "implicit_s_per_it_per_1m_nnz_2cores": 5.22 / 4.599383,
    "spark_s_per_it_per_1m_nnz_2cores": 61.42 / 4.599383,
    "k_measured": 64,
}
ASSUMED: dict[str, float] = {
    "cpu_headroom": 0.6,  # plan each core at 60% busy
    "partitions_per_worker": 2,  # room to add workers without repartitioning
    "redis_shard_gib": 25.0,  # usable memory per Redis master
    "redis_shard_cpu": 0.8,  # Redis is one thread per master: busy fraction planned
    "cassandra_rf": 3,
    "cassandra_node_tib": 2.0,  # data per node
    "cassandra_compression": 0.7,  # on-disk / payload after LZ4 (not measured here)
    "gpu_speedup": 4.0,  # implicit on one GPU vs the CPU node: NOT MEASURED here (no GPU lent)
    "node_cores": 32,  # one retrain node
    "spark_executor_cores": 8,
}
EXAMPLES = [
    {"name": "MovieLens 20M replayed at 10k/s", "events_per_s": 1e4, "users": 138_493,
     "items": 26_744, "k": 64, "history": 144, "versions": 5, "ratings": 20e6},
    {"name": "1B ratings, 100M users, 10M items at 100k events/s", "events_per_s": 1e5,
     "users": 1e8, "items": 1e7, "k": 64, "history": 10, "versions": 5, "ratings": 1e9},
    {"name": "10B ratings at 1M events/s (1B users, 50M items assumed)", "events_per_s": 1e6,
     "users": 1e9, "items": 5e7, "k": 64, "history": 10, "versions": 5, "ratings": 1e10},
]


def load_measured(scaleout: Path | None, retrain: Path | None) -> dict[str, float]:
    m = dict(MEASURED)
    if scaleout is not None:
        d = json.loads(scaleout.read_text())
        one = d["runs"][0]
        m["worker_cpu_s_per_1k"] = one["cpu_per_1k"]["worker1"]
        m["redis_cpu_s_per_1k"] = one["redis_cpu_per_1k"]
        m["kafka_cpu_s_per_1k"] = one["cpu_per_1k"].get("kafka", m["kafka_cpu_s_per_1k"])
        for key in ("user_vector", "item_vector", "seen_entry", "version_fixed"):
            m[f"redis_bytes_{key}"] = one["memory"][key]
        if d.get("cassandra"):
            m["cassandra_bytes_per_rating"] = d["cassandra"]["log_bytes_per_rating"]
            m["cassandra_bytes_per_vector"] = d["cassandra"]["snapshot_bytes_per_vector"]
    if retrain is not None:
        d = json.loads(retrain.read_text())
        it = d["args"]["iterations"]
        big = max((r for key, r in d["results"].items() if key.endswith("/implicit")),
                  key=lambda r: r["nnz"])  # the largest implicit shape measured
        m["spark_s_per_it_per_1m_nnz_2cores"] = big["spark_fit_s"] / it / (big["nnz"] / 1e6)
        m["implicit_s_per_it_per_1m_nnz_2cores"] = big["ours_fit_s"] / it / (big["nnz"] / 1e6)
    return m


def model(s: dict[str, Any], m: dict[str, float], a: dict[str, float]) -> dict[str, Any]:
    eps, users, items, k = s["events_per_s"], s["users"], s["items"], s["k"]
    kr = k / m["k_measured"]
    worker_cores = eps / 1000 * m["worker_cpu_s_per_1k"] / a["cpu_headroom"]
    workers = max(1, math.ceil(worker_cores))
    partitions = workers * int(a["partitions_per_worker"])
    # vector bytes: the float32 payload scales with k, the rest (hash, id, offsets) does not
    def vec(b: float) -> float:
        return b + 4 * m["k_measured"] * (kr - 1)
    one_version = (users * vec(m["redis_bytes_user_vector"]) + items * vec(m["redis_bytes_item_vector"])
                   + users * s["history"] * m["redis_bytes_seen_entry"]
                   + m["redis_bytes_version_fixed"])
    redis_bytes = one_version * s["versions"]
    redis_cpu = eps / 1000 * m["redis_cpu_s_per_1k"]
    shards = max(math.ceil(redis_bytes / (a["redis_shard_gib"] * 2**30)),
                 math.ceil(redis_cpu / a["redis_shard_cpu"]), 1)
    log_b = s["ratings"] * m["cassandra_bytes_per_rating"]
    snap_b = (users + items) * vec(m["cassandra_bytes_per_vector"]) * s["versions"]
    disk = (log_b + snap_b) * a["cassandra_compression"] * a["cassandra_rf"]
    nodes = max(int(a["cassandra_rf"]), math.ceil(disk / (a["cassandra_node_tib"] * 2**40)))
    nnz_m = s["ratings"] / 1e6 * kr**2
    cpu_it = m["implicit_s_per_it_per_1m_nnz_2cores"] * nnz_m * 2 / a["node_cores"]
    spark_cores = a["spark_executor_cores"]
    spark_it_per_core = m["spark_s_per_it_per_1m_nnz_2cores"] * 2 * nnz_m
    return {
        "kafka_partitions": partitions, "kafka_cpu_cores": eps / 1000 * m["kafka_cpu_s_per_1k"],
        "worker_processes": workers, "worker_cores": worker_cores,
        "redis_gib_per_version": one_version / 2**30, "redis_gib_total": redis_bytes / 2**30,
        "redis_cpu_cores": redis_cpu, "redis_shards": shards,
        "cassandra_tib": disk / 2**40, "cassandra_nodes": nodes,
        "retrain_it_s_cpu_node": cpu_it, "retrain_it_s_gpu": cpu_it / a["gpu_speedup"],
        "spark_executors_for_cpu_node_speed": math.ceil(
            spark_it_per_core / max(cpu_it, 1e-9) / spark_cores),
        "retrain_it_s_spark_10_executors": spark_it_per_core / (10 * spark_cores),
        "top_item_writes_per_s": eps * 0.01,
        "retrain_matrix_gib": s["ratings"] * 16 / 2**30,
    }


def report(s: dict[str, Any], out: dict[str, Any], a: dict[str, float]) -> str:
    lines = [f"### {s['name']}", "",
             f"inputs: {s['events_per_s']:,.0f} events/s, {s['users']:,.0f} users, "
             f"{s['items']:,.0f} items, k={s['k']}, {s['history']} seen entries/user, "
             f"{s['versions']} versions kept, {s['ratings']:,.0f} ratings in the log", "",
             "| output | value |", "| --- | --- |"]
    rows = [
        ("Kafka partitions", f"{out['kafka_partitions']}"),
        ("Kafka broker CPU (cores)", f"{out['kafka_cpu_cores']:.1f}"),
        ("worker processes (1 core each)", f"{out['worker_processes']} "
                                           f"({out['worker_cores']:.1f} cores busy / "
                                           f"{a['cpu_headroom']:.0%})"),
        ("Redis memory, one version / all kept", f"{out['redis_gib_per_version']:,.1f} / "
                                                 f"{out['redis_gib_total']:,.1f} GiB"),
        ("Redis CPU (cores) / shards", f"{out['redis_cpu_cores']:.1f} / {out['redis_shards']}"),
        ("Cassandra disk (RF x compressed)", f"{out['cassandra_tib'] * 1024:,.0f} GiB"),
        ("Cassandra nodes", f"{out['cassandra_nodes']}"),
        ("retrain matrix in memory (CSR + transpose, 16 B/rating)",
         f"{out['retrain_matrix_gib']:,.1f} GiB"),
        (f"retrain s/iteration, implicit CPU, one {a['node_cores']:.0f}-core node",
         f"{out['retrain_it_s_cpu_node']:,.1f}"),
        ("retrain s/iteration, implicit GPU (assumed speed-up)", f"{out['retrain_it_s_gpu']:,.1f}"),
        (f"retrain s/iteration, Spark, 10 executors x {a['spark_executor_cores']:.0f} cores",
         f"{out['retrain_it_s_spark_10_executors']:,.1f}"),
        ("Spark executors to match the CPU node", f"{out['spark_executors_for_cpu_node_speed']}"),
        ("writes/s on the most popular item (1% of events)", f"{out['top_item_writes_per_s']:,.0f}"),
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scaleout", type=Path, help="bench_scaleout.py --json output")
    p.add_argument("--retrain", type=Path, help="bench_retrain.py --spark --json output")
    for name in ("events-per-s", "users", "items", "ratings"):
        p.add_argument(f"--{name}", type=float)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--history", type=float, default=10)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print the outputs as JSON only")
    a = p.parse_args(argv)
    m = load_measured(a.scaleout, a.retrain)
    missing = [k for k, v in m.items() if not v]
    if missing:
        raise SystemExit(f"measured figures missing: {missing}; pass --scaleout/--retrain JSON")
    if a.events_per_s:
        scenarios = [{"name": "custom", "events_per_s": a.events_per_s, "users": a.users or 1e6,
                      "items": a.items or 1e5, "k": a.k, "history": a.history,
                      "versions": a.versions, "ratings": a.ratings or 1e8}]
    else:
        scenarios = EXAMPLES
    if a.json:
        print(json.dumps([model(s, m, ASSUMED) for s in scenarios]))
        return
    print("measured: " + ", ".join(f"{k}={v:g}" for k, v in m.items()))
    print("assumed: " + ", ".join(f"{k}={v:g}" for k, v in ASSUMED.items()) + "\n")
    for s in scenarios:
        print(report(s, model(s, m, ASSUMED), ASSUMED) + "\n")


if __name__ == "__main__":
    main()
