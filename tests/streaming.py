"""Helpers for tests that stream events through a real Kafka into a real worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import orjson
from confluent_kafka import Producer

from worker.config import Settings
from worker.runtime.loop import Worker
from worker.stores import kafka as kafka_io
from worker.stores.redis.store import RedisStore


def synthetic_events(n: int, n_users: int, n_items: int, seed: int = 0,
                     implicit: bool = False) -> list[dict[str, object]]:
    """Events with repeats, string ids, and pairs where user and item are both new."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, n) % n_users
    items = rng.zipf(1.2, n) % n_items
    out: list[dict[str, object]] = []
    for j in range(n):
        ev: dict[str, object] = {"user_id": f"u{users[j]}", "item_id": f"i{items[j]}",
                                 "ts": 1_700_000_000 + j}
        if implicit:
            ev["event"] = ["view", "like", "dislike", "neutral"][j % 4]
        else:
            ev["rating"] = float(rng.integers(1, 6))
        out.append(ev)
    return out


def produce(settings: Settings, events: Sequence[dict[str, object] | bytes],
            partitions: int = 1) -> None:
    kafka_io.ensure_topics(settings.kafka, {settings.kafka.topic: partitions,
                                            settings.kafka.dead_letter_topic: 1})
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "linger.ms": 5, "enable.idempotence": True})
    for ev in events:
        if isinstance(ev, bytes):
            producer.produce(settings.kafka.topic, value=ev)
        else:
            producer.produce(settings.kafka.topic, value=orjson.dumps(ev),
                             key=str(ev.get("user_id", "")).encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def run_worker(settings: Settings, idle_exit_s: float = 3.0) -> Worker:
    worker = Worker(settings)
    worker.run(idle_exit_s=idle_exit_s)
    return worker


def start_worker_thread(settings: Settings, idle_exit_s: float = 5.0) -> tuple[Worker, threading.Thread]:
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, kwargs={"idle_exit_s": idle_exit_s}, daemon=True)
    thread.start()
    return worker, thread


def store_for(settings: Settings) -> RedisStore:
    return RedisStore.from_settings(settings.redis)


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
