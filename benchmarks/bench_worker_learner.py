"""The worker's explicit learner on its own path, adaptive vs SGD, in one process.

1. ML-100K in time order produced to Kafka (one partition, binary format), applied by an
   in-process worker into Redis; prequential RMSE/MAE from the worker's own predictions
   (``ApplyResult.predictions`` before each event, clipped to [1, 5]), per ``model.learner``.
2. Throughput on ``bench_worker``'s synthetic stream (4 partitions, k=64), SGD and adaptive
   interleaved ``--reps`` times: applied/s, worker CPU and Redis CPU per event (Redis CPU counts
   every client of the Redis, so other load shows up there), with the load average.

    python benchmarks/bench_worker_learner.py --events 200000 --reps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_worker as bw  # noqa: E402

from online_als.datasets import load_movielens_100k  # noqa: E402
from producers.producer import RatingProducer  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.runtime.loop import Worker  # noqa: E402
from worker.stores import kafka as kafka_io  # noqa: E402
from worker.stores.redis.store import RedisStore  # noqa: E402


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def settings(tag: str, learner: str, partitions: int) -> Settings:
    s = bw.settings_for(tag, partitions, 64, False)
    return s.model_copy(update={"model": s.model.model_copy(update={"learner": learner})})


def ml100k_on_the_worker(tag: str, learner: str) -> str:
    s = settings(f"{tag}ml{learner[0]}", learner, 1)
    bw.cleanup(s)
    try:
        kafka_io.ensure_topics(s.kafka, {s.kafka.topic: 1, s.kafka.dead_letter_topic: 1})
        producer = RatingProducer(s.kafka, fmt="binary", mode="explicit")
        producer.send_batch(load_movielens_100k().sort_by_time())
        producer.flush(120)
        w = Worker(s)
        got: list[tuple[np.ndarray, ...]] = []
        prepare = w.applier.prepare

        def capture(state: Any, batch: Any, *args: Any, **kw: Any) -> Any:
            p = prepare(state, batch, *args, **kw)
            got.append((batch.offsets.copy(), batch.values.copy(),
                        p.result.predictions.copy(), p.result.applied.copy()))
            return p

        w.applier.prepare = capture  # type: ignore[method-assign]
        w.run(idle_exit_s=3.0)
        order = np.argsort(np.concatenate([g[0] for g in got]), kind="stable")
        val, pred, ok = (np.concatenate([g[j] for g in got])[order] for j in (1, 2, 3))
        e = np.clip(pred[ok.astype(bool)], 1, 5) - val[ok.astype(bool)]
        return (f"ML-100K on the worker, learner={learner}: {w.applied_total} applied, "
                f"prequential RMSE {np.sqrt(np.mean(e ** 2)):.4f} MAE {np.mean(np.abs(e)):.4f}"
                f" (clipped to [1, 5]); load {load()}")
    finally:
        bw.cleanup(s)


def throughput(tag: str, learner: str, n: int, redis_cpu: Any) -> str:
    s = settings(tag, learner, 4)
    bw.cleanup(s)
    try:
        bw.produce(s, n, 7)
        w = Worker(s)
        l0, c0, r0, t0 = load(), os.times(), redis_cpu(), time.perf_counter()
        w.run(idle_exit_s=3.0)
        dt = time.perf_counter() - t0 - 3.0
        c1 = os.times()
        cpu, rc = (c1.user + c1.system) - (c0.user + c0.system), redis_cpu() - r0
        return (f"throughput {learner:8s}: {w.applied_total} applied in {dt:.2f} s = "
                f"{w.applied_total / dt:,.0f}/s; worker CPU {1e6 * cpu / n:.1f} us/event (incl. "
                f"3 s idle), Redis CPU {1e6 * rc / n:.1f} us/event; load {l0} -> {load()}")
    finally:
        bw.cleanup(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-ml100k", action="store_true")
    a = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    store = RedisStore.from_settings(settings(tag, "sgd", 1).redis)

    def redis_cpu() -> float:
        info: Any = store.client.info("cpu")
        return float(info["used_cpu_user"] + info["used_cpu_sys"])

    print(f"bench_worker_learner: load {load()}", flush=True)
    for learner in () if a.no_ml100k else ("adaptive", "sgd"):
        print(ml100k_on_the_worker(tag, learner), flush=True)
    for rep in range(a.reps):
        for learner in ("sgd", "adaptive"):
            print(f"rep {rep} " + throughput(f"{tag}{learner[0]}{rep}", learner, a.events,
                                             redis_cpu), flush=True)


if __name__ == "__main__":
    main()
