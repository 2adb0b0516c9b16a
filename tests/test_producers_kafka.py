"""Producers against the real local Kafka: replay, order per key, pacing, back-pressure."""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Message
from confluent_kafka.admin import AdminClient

from online_als.datasets import Ratings, read_ratings, sort_by_time
from producers.producer import RatingProducer, replay
from producers.synthetic import generate
from tests.conftest import Isolated, StackInfo, make_settings
from worker.cli.main import main
from worker.events import DecodeConfig, decode_batch
from worker.stores.kafka import ensure_topics

pytestmark = pytest.mark.stack

ML100K = Path("/work/shared/data/movielens/ml-100k/u.data.gz")


@pytest.fixture
def topic(stack: StackInfo, isolated: Isolated) -> Iterator[str]:
    """The test's own topic, deleted afterwards so repeated runs leave nothing behind."""
    yield isolated.topic
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for fut in admin.delete_topics([isolated.topic], operation_timeout=10).values():
        # Never created (e.g. the test failed early): nothing to delete.
        with contextlib.suppress(Exception):
            fut.result(15)


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 90.0
                ) -> list[Message]:
    """Every message of ``topic`` (stops at ``expected`` plus a quiet second for extras)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check_{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 1.0)
            out += [m for m in batch if m.error() is None]
            if len(out) >= expected and not batch:
                break
    finally:
        consumer.close()
    return out


def produce_cli(stack: StackInfo, topic: str, capsys: pytest.CaptureFixture[str],
                *args: str) -> dict[str, object]:
    code = main(["produce", *args, "--topic", topic, "--json", "--no-progress",
                 "--set", f"kafka.bootstrap_servers={stack.bootstrap}",
                 "--set", "kafka.partitions=3"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return summary


def per_user(users: list[str], items: list[str]) -> dict[str, list[str]]:
    seq: dict[str, list[str]] = defaultdict(list)
    for u, i in zip(users, items, strict=True):
        seq[u].append(i)
    return seq


def test_ml100k_replay_in_time_order_per_key(stack: StackInfo, topic: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    summary = produce_cli(stack, topic, capsys, str(ML100K))
    assert (summary["sent"], summary["delivered"], summary["failed"]) == (100_000, 100_000, 0)
    msgs = consume_all(stack.bootstrap, topic, 100_000)
    assert len(msgs) == 100_000
    decoded = decode_batch([m.value() for m in msgs], None, DecodeConfig())
    assert not decoded.rejects and len(decoded) == 100_000
    # Key = user id, and one user's events share a partition.
    keys = [bytes(m.key() or b"").decode() for m in msgs]
    assert keys == decoded.ratings.user_ids.tolist()
    partitions: dict[str, set[int | None]] = defaultdict(set)
    for key, m in zip(keys, msgs, strict=True):
        partitions[key].add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) == 3
    # Per key, exactly the file's events in (stable) timestamp order.
    want = sort_by_time(read_ratings(ML100K))
    got = decoded.ratings
    assert per_user(got.user_ids.tolist(), got.item_ids.tolist()) == per_user(
        want.user_ids.tolist(), want.item_ids.tolist())
    ts_by_user = per_user(got.user_ids.tolist(), [str(int(t)) for t in got.timestamps])
    assert all(list(map(int, s)) == sorted(map(int, s)) for s in ts_by_user.values())


def test_binary_implicit_from_ratings(stack: StackInfo, topic: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    summary = produce_cli(stack, topic, capsys, str(ML100K), "--format", "binary",
                          "--implicit-from-ratings", "--limit", "5000")
    assert summary["mode"] == "implicit" and summary["delivered"] == 5000
    msgs = consume_all(stack.bootstrap, topic, 5000)
    decoded = decode_batch([m.value() for m in msgs], None, DecodeConfig(mode="implicit"))
    assert len(decoded) == 5000 and not decoded.rejects
    assert set(decoded.ratings.events.tolist()) == {"like", "view", "dislike"}
    first = sort_by_time(read_ratings(ML100K)).slice(0, 5000)
    likes = int(np.count_nonzero(first.values >= 4))
    assert decoded.ratings.events.tolist().count("like") == likes


def test_rate_limit_is_honoured(stack: StackInfo, topic: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    summary = produce_cli(stack, topic, capsys, "--synthetic", "--n-events", "4000",
                          "--n-users", "100", "--n-items", "50", "--rate", "2000")
    assert summary["delivered"] == 4000
    # 4,000 events at 2,000/s: 2 s less the 0.1 s initial burst; slack for a busy machine.
    assert 1.8 <= float(summary["seconds"]) <= 3.0  # type: ignore[arg-type]
    assert len(consume_all(stack.bootstrap, topic, 4000)) == 4000


def test_back_pressure_blocks_and_drops_nothing(stack: StackInfo, isolated: Isolated,
                                                topic: str) -> None:
    settings = make_settings(stack, isolated)
    ensure_topics(settings.kafka, {topic: 1})
    producer = RatingProducer(settings.kafka, topic, queue_max_messages=20, linger_ms=5)
    data: Ratings = next(generate(3000, 40, 30, k=4, seed=9, chunk_rows=3000))
    stats = replay(producer, [data])
    assert stats.queue_full_waits > 0
    assert (stats.sent, stats.delivered, stats.failed) == (3000, 3000, 0)
    msgs = consume_all(stack.bootstrap, topic, 3000)
    decoded = decode_batch([m.value() for m in msgs], None, DecodeConfig())
    got = decoded.ratings
    assert per_user(got.user_ids.tolist(), got.item_ids.tolist()) == per_user(
        data.user_ids.tolist(), data.item_ids.tolist())
