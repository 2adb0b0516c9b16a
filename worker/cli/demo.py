"""``online-als demo``: the whole product on the local stack, end to end, in a few minutes.

Stack up -> topics and schema -> a worker -> replay 90% of MovieLens 100K in timestamp order
-> a full retrain (ALS-WR) promoted after catching up -> recommendations and similar movies
with titles -> a rollback and back -> a short feedback-loop simulation (``online-als
simulate``) -> a report with plots -> stack down (unless --keep-stack).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.cli import retrain_text
from worker.cli.common import EXIT_FAIL, EXIT_OK, add_common
from worker.config import Settings, load_config

log = logging.getLogger("online_als.demo")


def add_demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on the local stack",
                       description="Stack up, stream MovieLens 100K through a worker, retrain, "
                                   "recommend with titles, roll back, write a report.")
    add_common(p)
    p.add_argument("--keep-stack", action="store_true", help="leave the servers running")
    p.add_argument("--report-dir", default="demo-report", help="where the report and plots go")
    p.add_argument("--user", default="1", help="the sample user (a MovieLens user id)")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="fraction of the stream (by time) kept back to compare the models")
    p.add_argument("--backend", choices=("auto", "spark"), default="auto",
                   help="retrain engine (retrain.backend): auto = ALS-WR in process; spark = "
                        "Spark MLlib ALS on retrain.spark_master (needs pyspark)")
    p.set_defaults(func=run_demo)


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def demo_settings(args: argparse.Namespace, run_id: str) -> Settings:
    """Demo names and model choices; ``--set`` and the environment still override them."""
    from worker.config import parse_set_flags

    overrides = {
        "kafka.topic": f"demo-ratings-{run_id}", "kafka.dead_letter_topic": f"demo-ratings-{run_id}.dlq",
        "kafka.group_id": f"demo-{run_id}", "kafka.partitions": "3",
        "redis.key_prefix": f"demo{run_id}", "cassandra.keyspace": f"demo_{run_id}",
        "model.mode": "explicit",  # the model's settings: online_als.defaults
        "archive.snapshot_interval_s": "5", "retrain.iterations": "15",
        # bias shrinkage for ranking: at the RMSE-optimal 0.05 ALS-WR ranks rare items first
        "retrain.explicit_reg_bias": "1.0",
        "retrain.backend": getattr(args, "backend", "auto"),
    }
    return load_config(args.config, {**overrides, **parse_set_flags(args.set)})


def run_demo(args: argparse.Namespace) -> int:
    from worker.devstack import Stack, StackConfig

    started = time.perf_counter()
    run_id = time.strftime("%Y%m%d%H%M%S")
    stack = Stack(StackConfig.from_env())
    _say("1/7 starting the local stack (Redis, Kafka, Cassandra)")
    stack.up()
    try:
        return _demo(args, run_id, started)
    except Exception:
        log.exception("the demo failed")
        return EXIT_FAIL
    finally:
        if not args.keep_stack:
            close_kafka_producers()
            _say("stopping the local stack (pass --keep-stack to keep it)")
            stack.down()


def close_kafka_producers(timeout_s: float = 5.0) -> int:
    """Flush and close every Kafka producer still open in this process; returns how many.

    The demo's producers (the replay's, each worker's dead-letter producer, the simulation's)
    outlive their work, some held only by reference cycles; left open while the servers
    stop, their librdkafka threads print connection errors on the terminal.
    """
    import gc

    from confluent_kafka import Producer

    gc.collect()  # frees the ones only cycles held (their destructor closes them)
    closed = 0
    for obj in gc.get_objects():
        if isinstance(obj, Producer):
            try:
                obj.flush(timeout_s)
            except RuntimeError:  # already closed
                continue
            obj.close()
            closed += 1
    return closed


def _demo(args: argparse.Namespace, run_id: str, started: float) -> int:
    from online_als.datasets import load_movielens_100k, load_movielens_items
    from producers.producer import RatingProducer, replay
    from worker.control.lifecycle import rollback
    from worker.control.retrain_job import run_retrain
    from worker.metrics import WorkerMetrics, start_http_server
    from worker.runtime.loop import Worker
    from worker.serving.client import ServingClient
    from worker.stores import kafka as kafka_io
    from worker.stores.cassandra.store import CassandraStore
    from worker.stores.redis.store import RedisStore

    settings = demo_settings(args, run_id)
    k = settings.kafka
    _say(f"2/7 topics and schema: topic {k.topic} (3 partitions), Redis prefix "
         f"{settings.redis.key_prefix}, Cassandra keyspace {settings.cassandra.keyspace}")
    kafka_io.ensure_topics(k, {k.topic: k.partitions, k.dead_letter_topic: 1})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()

    ratings = load_movielens_100k().sort_by_time()
    n_stream = int(len(ratings) * (1 - args.holdout))
    stream, holdout = ratings.slice(0, n_stream), ratings.slice(n_stream, len(ratings))

    _say("3/7 starting a worker (metrics on "
         f"http://{settings.metrics.host}:{settings.metrics.port}/metrics)")
    metrics = WorkerMetrics(window=settings.worker.prequential_window)
    server = start_http_server(settings.metrics.host, settings.metrics.port, metrics.registry)
    worker = Worker(settings, metrics, server)
    trace: list[tuple[float, int, float]] = []
    worker.on_batch = lambda n, rmse: trace.append((time.perf_counter(), n, rmse))
    thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": 6.0}, daemon=True)
    thread.start()
    from worker.control.archive import Archiver

    archiver = Archiver(settings)  # the system of record's log, beside the worker
    archive_thread = threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 6.0},
                                      daemon=True)
    archive_thread.start()

    _say(f"4/7 replaying {n_stream:,} MovieLens 100K ratings in timestamp order")
    producer = RatingProducer(k, mode="explicit")
    t0 = time.perf_counter()
    from tqdm import tqdm

    with tqdm(total=n_stream, unit="ratings", desc="produce") as bar, producer:
        stats = replay(producer, stream.iter_batches(5000), on_progress=bar.update)
    del producer  # the last reference: librdkafka's threads stop now, not at stack down
    produce_s = time.perf_counter() - t0
    thread.join(600)
    store = RedisStore.from_settings(settings.redis)
    online_version = store.current_version()
    assert online_version is not None
    print(f"   produced {stats.delivered:,} in {produce_s:.1f}s; worker applied "
          f"{worker.applied_total:,}, dead-lettered {worker.dead_lettered_total}; "
          f"prequential RMSE (last {settings.worker.prequential_window:,}) "
          f"{metrics.prequential.rmse():.4f}")

    engine = "Spark MLlib ALS" if settings.retrain.backend == "spark" else "ALS-WR"
    _say(f"5/7 full retrain ({engine}) from the Cassandra ratings log")
    archive_thread.join(600)
    print(f"   archiver wrote {archiver.archived_total:,} events to the Cassandra log")
    with CassandraStore(settings.cassandra) as cass:
        # forced, so the demo has a retrained version to serve and roll back: the report
        # says when the gate (at its real margin) would have kept the online model instead
        report = run_retrain(settings, cass, store, force=True, force_promote=True)
    print(retrain_text.render(report.to_dict()))
    retrained_version = store.current_version()

    titles = load_movielens_items().as_dict()
    client = ServingClient.from_settings(settings, refresh_s=0.0)
    _say(f"6/7 recommendations for user {args.user} (version {client.version})")
    _print_recs(client.recommend(args.user, n=10), titles)
    liked = _favourite(stream, args.user)
    if liked is not None:
        print(f"\n   movies similar to {titles.get(liked, liked)!r}:")
        _print_recs(client.similar_items(liked, n=5), titles)

    ndcg = {
        "online": _ndcg(store, online_version, stream, holdout, settings.model.rank),
        "retrained": _ndcg(store, retrained_version, stream, holdout, settings.model.rank),
    }
    print(f"\n   NDCG@10 on the last {args.holdout:.0%} of the stream (not streamed): "
          f"{_ndcg_text(ndcg)}")

    _say(f"7/7 rollback to the online-only version {online_version}, then forward again")
    with CassandraStore(settings.cassandra) as cass:
        back = rollback(settings, cass, store, online_version, "demo: roll back")
        print(f"   switched to {back['to']} in {back['seconds'] * 1000:.1f} ms "
              f"({'loaded from Cassandra' if back['loaded_from_cassandra'] else 'resident'})")
        client.refresh()
        _print_recs(client.recommend(args.user, n=5), titles)
        if retrained_version is not None and retrained_version != online_version:
            fwd = rollback(settings, cass, store, retrained_version, "demo: forward")
            print(f"   and back to {fwd['to']} in {fwd['seconds'] * 1000:.1f} ms")
    worker.stop()
    server.close()

    _say("feedback loop (`online-als simulate`): simulated users answer their top-10, 8 rounds")
    from worker.cli.simulate_cli import simulate_main

    simulate_main(["--rounds", "8", "--users", "100", "--items", "200", "--plot",
                   str(Path(args.report_dir) / "simulate.png"),
                   *(["--config", args.config] if args.config else []),
                   *[x for s in args.set for x in ("--set", s)]])

    out = Path(args.report_dir)
    summary = {
        "run_id": run_id, "streamed": n_stream, "applied": worker.applied_total,
        "produce_seconds": round(produce_s, 2), "prequential_rmse": metrics.prequential.rmse(),
        "retrain": report.to_dict(), "ndcg_at_10": ndcg,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    _write_report(out, summary, trace)
    _say(f"done in {summary['wall_seconds']}s; report: {out / 'report.md'}")
    if args.keep_stack:
        names = (f"--set redis.key_prefix={settings.redis.key_prefix} "
                 f"--set cassandra.keyspace={settings.cassandra.keyspace} "
                 f"--set kafka.topic={settings.kafka.topic}")
        print(f"   explore this run (the stack stays up):\n"
              f"   online-als recommend --user {args.user} {names}\n"
              f"   online-als snapshots list {names}")
    return EXIT_OK


def _ndcg_text(ndcg: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in ndcg.items())


def _print_recs(recs: Any, titles: dict[str, str]) -> None:
    for rank, (item, score) in enumerate(recs, start=1):
        print(f"   {rank:>2}. {titles.get(item, item)}  ({score:.3f})")


def _favourite(stream: Any, user: str) -> str | None:
    mask = stream.user_ids.astype(str) == user
    if not mask.any():
        return None
    j = int(np.argmax(np.where(mask, stream.values, -1)))
    return str(stream.item_ids[j])


def _ndcg(store: Any, version: int | None, train: Any, test: Any, rank: int) -> float:
    """NDCG@10 of a Redis version on ``test`` ratings >= 4, excluding items seen in ``train``."""
    from online_als.evaluation import ndcg_at_k, split_by_group
    from online_als.idmap import IdMap
    from online_als.serving.topn import top_n_batch
    from worker.stores.redis.store import dump_vectors

    if version is None:
        return float("nan")
    users_f = dump_vectors(store, version, "u", rank)
    items_f = dump_vectors(store, version, "i", rank)
    uf, itf, ib = users_f.vectors, items_f.vectors, items_f.biases
    users_map, items_map = IdMap.from_list(users_f.id_list()), IdMap.from_list(items_f.id_list())
    tu = users_map.rows_for(train.user_ids, add=False)
    ti = items_map.rows_for(train.item_ids, add=False)
    su = users_map.rows_for(test.user_ids, add=False)
    si = items_map.rows_for(test.item_ids, add=False)
    pos = (test.values >= 4) & (su >= 0) & (si >= 0)
    users = np.unique(su[pos])
    relevant = split_by_group(np.searchsorted(users, su[pos]), si[pos], len(users))
    seen_ok = np.isin(tu, users) & (ti >= 0)
    seen = split_by_group(np.searchsorted(users, tu[seen_ok]), ti[seen_ok], len(users))
    rows, _ = top_n_batch(uf[users], itf, 10, exclude=seen, item_bias=ib)
    return float(ndcg_at_k(rows, relevant, k=10))


def _write_report(out: Path, summary: dict[str, Any], trace: list[tuple[float, int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    t = np.array([x[0] for x in trace]) - (trace[0][0] if trace else 0)
    n = np.cumsum([x[1] for x in trace])
    rmse = np.array([x[2] for x in trace])
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(n, rmse)
    ax[0].set(title="prequential RMSE (sliding window)", xlabel="ratings applied", ylabel="RMSE")
    if len(t) > 1:
        rate = np.diff(n) / np.maximum(np.diff(t), 1e-6)
        ax[1].plot(t[1:], rate)
    ax[1].set(title="worker throughput", xlabel="seconds", ylabel="ratings/s")
    nd = summary["ndcg_at_10"]
    ax[2].bar(list(nd), list(nd.values()), color=["tab:blue", "tab:orange"])
    ax[2].set(title="NDCG@10 on the held-back 10%", ylabel="NDCG@10")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    r = summary["retrain"]
    (out / "report.md").write_text(
        f"# online-als demo {summary['run_id']}\n\n![plots](demo.png)\n\n"
        f"- streamed {summary['streamed']:,} MovieLens 100K ratings in timestamp order; "
        f"applied {summary['applied']:,}\n"
        f"- prequential RMSE (last window): {summary['prequential_rmse']:.4f}\n"
        f"- retrain:\n\n```\n{retrain_text.render(r, indent='')}\n```\n\n"
        f"- NDCG@10 on the held-back ratings: {_ndcg_text(summary['ndcg_at_10'])}\n"
        f"- wall time: {summary['wall_seconds']} s\n")
