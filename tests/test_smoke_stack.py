"""Smoke tests: the three real servers answer (produce/consume, SET/GET, CREATE/INSERT/SELECT)."""

from __future__ import annotations

import time

import pytest
import redis
from cassandra.cluster import Cluster
from confluent_kafka import Consumer, Producer

from tests.conftest import Isolated, StackInfo
from worker.config import KafkaSettings
from worker.stores import kafka as kafka_io

pytestmark = pytest.mark.stack


def test_kafka_produce_and_consume(stack: StackInfo, isolated: Isolated) -> None:
    settings = KafkaSettings(bootstrap_servers=stack.bootstrap)
    kafka_io.ensure_topics(settings, {isolated.topic: 2})
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    sent = [f"m{i}".encode() for i in range(20)]
    for i, value in enumerate(sent):
        producer.produce(isolated.topic, value=value, key=str(i % 5).encode())
    assert producer.flush(20) == 0
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": isolated.group,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([isolated.topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg.value())
    consumer.close()
    assert sorted(got) == sorted(sent)


def test_redis_set_get(stack: StackInfo, isolated: Isolated) -> None:
    client = redis.Redis(host=stack.host, port=stack.redis_port)
    key = f"{isolated.redis_prefix}:smoke"
    client.set(key, b"\x00\x01value")
    assert client.get(key) == b"\x00\x01value"
    client.delete(key)


def test_cassandra_create_insert_select(stack: StackInfo, isolated: Isolated) -> None:
    cluster = Cluster([stack.host], port=stack.cassandra_port)
    session = cluster.connect()
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {isolated.keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {isolated.keyspace}.t (k text PRIMARY KEY, v int)")
        session.execute(f"INSERT INTO {isolated.keyspace}.t (k, v) VALUES ('a', 1)")
        rows = list(session.execute(f"SELECT k, v FROM {isolated.keyspace}.t"))
        assert [(r.k, r.v) for r in rows] == [("a", 1)]
        session.execute(f"DROP KEYSPACE {isolated.keyspace}")
    finally:
        cluster.shutdown()
