"""``online-als simulate``: the feedback loop on the real stack (Redis, Kafka, a worker).

Simulated users (:class:`online_als.evaluation.PlantedWorld`: hidden factors, true
affinities) are shown their top-``n`` from the serving Redis (:class:`ServingClient`, seen
items excluded), answer each item *like*, *dislike* or *neutral*, and the answers go through
Kafka as implicit events (:class:`RatingProducer`, ``event`` = the answer's name, weighted by
``model.event_weights``). A worker running in this process (:class:`worker.runtime.loop.Worker`)
applies them; the next round starts once it has applied every event sent. The rounds, the
answer model and the precision are those of :func:`online_als.evaluation.simulate_feedback`.

Answer weights ``like:dislike:neutral`` (default 4:1:2): each user likes the top 4/7 of the
catalogue by true affinity, dislikes the bottom 1/7 and is neutral about the rest, so a random
top-10 draws answers in those proportions (precision ~0.571); a model that learns from the
answers shows more liked items round after round. Answers are noisy (``--noise``).

Each run uses its own topic, consumer group and Redis prefix (``sim<run id>``) and, unless
``--keep``, deletes them at the end. Cassandra is off by default (``--set
cassandra.enabled=true`` turns it on: the worker then bootstraps its version there).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.cli.common import EXIT_FAIL, EXIT_OK, UsageError, add_common, emit
from worker.config import Settings, load_config, parse_set_flags

log = logging.getLogger("online_als.simulate")

EVENT_OF_VALUE = {1.0: "like", 0.0: "neutral", -1.0: "dislike"}


def add_simulate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="feedback-loop simulation on the local stack (precision per round)",
        description="Simulated users answer their top-N from Redis (like/dislike/neutral); the "
                    "answers go through Kafka to a worker; precision per round and a plot.")
    add_common(p)
    p.add_argument("--rounds", type=int, default=15, help="recommend -> answer -> learn rounds")
    p.add_argument("--users", type=int, default=300, help="simulated users")
    p.add_argument("--items", type=int, default=400, help="catalogue size")
    p.add_argument("--n", type=int, default=10, help="recommendations per user and round")
    p.add_argument("--answer-weights", default="4:1:2", metavar="LIKE:DISLIKE:NEUTRAL",
                   help="shares of the catalogue each user likes, dislikes, is neutral about")
    p.add_argument("--noise", type=float, default=0.25,
                   help="answer noise, in units of the user's affinity spread")
    p.add_argument("--initial", type=int, default=5,
                   help="random items each user answers before round 1 (warm start)")
    p.add_argument("--planted-rank", type=int, default=8, help="rank of the hidden factors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="simulate.png", help="where the precision plot goes ('' = none)")
    p.add_argument("--round-timeout", type=float, default=60.0,
                   help="seconds to wait for the worker to apply a round's events")
    p.add_argument("--keep", action="store_true", help="keep the run's topic and Redis keys")
    p.set_defaults(func=run_simulate)


def answer_fractions(spec: str) -> tuple[float, float]:
    """``"like:dislike:neutral"`` weights -> (like_fraction, dislike_fraction).

    >>> answer_fractions("4:1:2")
    (0.5714285714285714, 0.14285714285714285)
    """
    try:
        like, dislike, neutral = (float(x) for x in spec.split(":"))
    except ValueError:
        raise UsageError(f"--answer-weights {spec!r}: expected LIKE:DISLIKE:NEUTRAL, e.g. 4:1:2"
                         ) from None
    total = like + dislike + neutral
    if min(like, dislike, neutral) < 0 or like <= 0 or total <= 0 or like >= total:
        raise UsageError(f"--answer-weights {spec!r}: weights must be >= 0, like > 0 and "
                         "dislike + neutral > 0")
    return like / total, dislike / total


def check_args(args: argparse.Namespace) -> tuple[float, float]:
    """Usage errors before anything is created; returns the like/dislike fractions."""
    like, dislike = answer_fractions(args.answer_weights)
    if args.rounds < 1 or args.users < 1 or args.n < 1:
        raise UsageError("--rounds, --users and --n must be >= 1")
    need = args.n * (args.rounds + 1) + args.initial
    if args.items < need:
        raise UsageError(f"--items {args.items} is too small for {args.rounds} rounds of "
                         f"{args.n} unseen items; use at least {need}")
    return like, dislike


def simulate_settings(args: argparse.Namespace, run_id: str) -> Settings:
    """Implicit mode and the run's own names; ``--set`` and the environment override them."""
    overrides = {
        "model.mode": "implicit",
        "kafka.topic": f"sim-{run_id}", "kafka.dead_letter_topic": f"sim-{run_id}.dlq",
        "kafka.group_id": f"sim-{run_id}", "kafka.partitions": "1",
        "redis.key_prefix": f"sim{run_id}", "cassandra.enabled": "false",
        "worker.batch_max_wait_ms": "20",
        # a round takes 0.2-1 s here, not the minutes real users take to answer: refresh the
        # fold-in's Grams as often, relative to a round, as model.gram_refresh_s does live
        "model.gram_refresh_s": "0.2",
    }
    return load_config(getattr(args, "config", None),
                       {**overrides, **parse_set_flags(getattr(args, "set", []))})


class StackLearner:
    """The :class:`online_als.evaluation.FeedbackLearner` protocol on the real stack.

    ``recommend`` reads top-n lists from Redis; ``learn_batch`` sends the answers as events
    through Kafka and waits until ``worker`` has applied (or dead-lettered) all of them.
    """

    def __init__(self, settings: Settings, worker: Any, n_items: int, timeout_s: float) -> None:
        from producers.producer import RatingProducer
        from worker.serving.client import ServingClient

        self.worker = worker
        self.timeout_s = timeout_s
        self.items = np.array([f"i{j}" for j in range(n_items)])
        self.row_of = {iid: j for j, iid in enumerate(self.items.tolist())}
        self.producer = RatingProducer(settings.kafka, mode="implicit", linger_ms=2)
        # items change with every batch the worker applies: reload them for every call
        self.client = ServingClient.from_settings(settings, refresh_s=0.0, reload_items_s=0.0)
        self.settings = settings
        self._watch: Any = None
        self.sent = 0
        self.sources: list[dict[str, int]] = []  # per recommend call: model / popular lists

    def recommend(self, user_rows: np.ndarray, n: int) -> np.ndarray:
        recs = self.client.recommend_batch([f"u{u}" for u in user_rows.tolist()], n=n)
        out = np.full((len(recs), n), -1, np.int64)
        counts = {"model": 0, "popular": 0}
        for r, rec in enumerate(recs):
            rows = [self.row_of.get(i, -1) for i in rec.item_ids[:n]]
            out[r, : len(rows)] = rows
            src = getattr(rec, "source", "model")
            counts[src] = counts.get(src, 0) + 1
        self.sources.append(counts)
        return out

    def learn_batch(self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray) -> None:
        ts = time.time()
        for u, i, v in zip(user_rows.tolist(), item_rows.tolist(), values.tolist(), strict=True):
            self.producer.send(f"u{u}", str(self.items[i]), event=EVENT_OF_VALUE[float(v)], ts=ts)
        if self.producer.flush(30.0):
            raise RuntimeError("Kafka did not acknowledge every event within 30 s")
        self.sent += len(values)
        self.wait_applied()

    def wait_applied(self) -> None:
        """Until the worker's Redis checkpoints reach the topic's end (every event sent was
        applied, refused by the kernel's guard or dead-lettered)."""
        from confluent_kafka import TopicPartition

        from worker.stores import kafka as kafka_io

        topic = self.producer.topic
        if self._watch is None:
            self._watch = kafka_io.make_consumer(self.settings.kafka)
        parts = kafka_io.topic_partitions(self._watch, topic)
        ends = {p: self._watch.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        deadline = time.monotonic() + self.timeout_s
        while True:
            version = self.client.store.current_version()
            done = version is not None and all(
                (c.offset or 0) >= ends[p]
                for p, c in self.client.store.read_checkpoints(version, topic, parts).items())
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the worker did not apply a round's events within {self.timeout_s:.0f} s "
                    f"({self.worker.applied_total} of {self.sent} applied; raise "
                    "--round-timeout, or check Kafka and Redis)")
            time.sleep(0.02)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()


def run_simulation(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Run the loop on the stack named by ``settings``; returns the per-round figures."""
    from online_als.evaluation import FeedbackConfig, RandomLearner, simulate_feedback
    from worker.runtime.loop import Worker

    like, dislike = check_args(args)
    cfg = FeedbackConfig(
        n_users=args.users, n_items=args.items, rank=args.planted_rank, n_recs=args.n,
        rounds=args.rounds, like_fraction=like, dislike_fraction=dislike, noise=args.noise,
        initial_per_user=args.initial, seed=args.seed,
        feedback_values={"like": 1.0, "neutral": 0.0, "dislike": -1.0})
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, name="simulate-worker", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        learner = StackLearner(settings, worker, args.items, args.round_timeout)
        try:
            res = simulate_feedback(learner, cfg)
        finally:
            learner.close()
    finally:
        worker.stop()
        thread.join(30)
    wall = time.perf_counter() - t0
    baseline = simulate_feedback(RandomLearner(args.items, seed=args.seed), cfg)
    return {
        "rounds": [
            {"round": r + 1, "precision": float(res.precision[r]),
             "like_rate": float(res.like_rate[r]), "dislike_rate": float(res.dislike_rate[r]),
             "coverage": float(res.coverage[r]), "events": int(res.n_feedback[r]),
             "model_lists": learner.sources[r].get("model", 0),
             "popular_lists": learner.sources[r].get("popular", 0)}
            for r in range(len(res.precision))
        ],
        "random_precision": float(baseline.precision.mean()),
        "events_sent": learner.sent, "events_applied": worker.applied_total,
        "dead_lettered": worker.dead_lettered_total, "seconds": round(wall, 2),
        "topic": settings.kafka.topic, "key_prefix": settings.redis.key_prefix,
        "answer_weights": args.answer_weights, "users": args.users, "items": args.items,
    }


def cleanup(settings: Settings) -> None:
    """Delete the run's Redis keys and Kafka topics (best effort)."""
    from confluent_kafka.admin import AdminClient

    from worker.stores import kafka as kafka_io
    from worker.stores.redis.store import RedisStore

    store = RedisStore.from_settings(settings.redis)
    keys = list(store.client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=5000))
    for start in range(0, len(keys), 1000):
        if store.cluster:
            for key in keys[start:start + 1000]:
                store.client.delete(key)
        else:
            store.client.delete(*keys[start:start + 1000])
    k = settings.kafka
    admin = AdminClient(kafka_io.client_config(k))
    for fut in admin.delete_topics([k.topic, k.dead_letter_topic], operation_timeout=30).values():
        try:
            fut.result(30)
        except Exception as exc:  # noqa: BLE001 - best effort: the run's result stands
            log.warning("could not delete a topic of the run: %s", exc)


def write_plot(path: str, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in summary["rounds"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(rounds, [r["precision"] for r in summary["rounds"]], marker="o",
            label="worker on the stack")
    ax.axhline(summary["random_precision"], color="grey", ls="--", label="random top-n")
    ax.set(title=f"feedback loop: {summary['users']} users, {summary['items']} items, answers "
                 f"{summary['answer_weights']}", xlabel="round", ylabel="precision@n")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _human(summary: dict[str, Any]) -> str:
    lines = ["round  precision  like  dislike  coverage  events  lists(model/popular)"]
    for r in summary["rounds"]:
        lines.append(f"{r['round']:>5}  {r['precision']:9.3f}  {r['like_rate']:4.2f}  "
                     f"{r['dislike_rate']:7.2f}  {r['coverage']:8.3f}  {r['events']:6d}  "
                     f"{r['model_lists']}/{r['popular_lists']}")
    first, last = summary["rounds"][0]["precision"], summary["rounds"][-1]["precision"]
    lines.append(f"precision {first:.3f} -> {last:.3f} (random top-n: "
                 f"{summary['random_precision']:.3f}); {summary['events_applied']:,} events "
                 f"applied by the worker in {summary['seconds']} s")
    if summary.get("plot"):
        lines.append(f"plot: {summary['plot']}")
    return "\n".join(lines)


def run_simulate(args: argparse.Namespace) -> int:
    from worker.stores import kafka as kafka_io

    check_args(args)
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}{np.random.default_rng().integers(1000):03d}"
    settings = simulate_settings(args, run_id)
    k = settings.kafka
    # before the run's cleanup is armed: with Kafka down there is nothing to delete, and
    # deleting would wait out its timeouts before the one error line
    kafka_io.ensure_topics(k, {k.topic: k.partitions, k.dead_letter_topic: 1})
    try:
        summary = run_simulation(settings, args)
    finally:
        if not args.keep:
            cleanup(settings)
    if args.plot:
        write_plot(args.plot, summary)
        summary["plot"] = args.plot
    emit(args, summary, _human)
    return EXIT_OK if summary["events_applied"] > 0 else EXIT_FAIL


def simulate_main(argv: list[str]) -> int:
    """``online-als simulate ARGV`` from Python (the demo's step): parse, run, print."""
    parser = argparse.ArgumentParser(prog="online-als")
    add_simulate_parser(parser.add_subparsers())
    return run_simulate(parser.parse_args(["simulate", *argv]))
