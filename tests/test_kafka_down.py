"""Kafka down: each Kafka command prints one clear line and exits 3 (README's exit codes).

librdkafka logs a ``FAIL`` line on its own stderr for every reconnect (hundreds before the
clients give up); ``worker.stores.kafka.LibrdkafkaLog`` takes them into the project's logger,
rate-limited, and the error line names the broker and how it failed. Redis and Cassandra are
the running stack; Kafka is a closed port. The four commands run at once (each waits out its
metadata timeout, 15-30 s).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import Isolated, StackInfo


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is


def test_kafka_down_gives_one_line_and_exit_3(stack: StackInfo, isolated: Isolated) -> None:
    broker = f"127.0.0.1:{_closed_port()}"
    common = ["--set", f"kafka.bootstrap_servers={broker}",
              "--set", f"kafka.topic={isolated.topic}",
              "--set", f"redis.host={stack.host}", "--set", f"redis.port={stack.redis_port}",
              "--set", f"redis.key_prefix={isolated.redis_prefix}",
              "--set", f"cassandra.port={stack.cassandra_port}",
              "--set", f"cassandra.keyspace={isolated.keyspace}", "--set", "cassandra.enabled=false"]
    commands = {
        "produce": ["produce", "--synthetic", "--no-progress"],
        "worker": ["worker", "--idle-exit", "5", "--no-metrics-server"],
        "archive": ["archive", "--idle-exit", "5", "--no-metrics-server"],
        "simulate": ["simulate", "--rounds", "1"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "worker.cli", *argv, *common],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in commands.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert not [ln for ln in err.splitlines() if ln.startswith("%")], (name, err[:2000])
        # the worker's INFO line with its settings is not about Kafka; everything else is one line
        lines = [ln for ln in err.splitlines() if ln.strip() and " INFO " not in ln]
        assert len(lines) == 1, (name, err[:2000])
        assert lines[0].startswith(f"online-als {name}: Kafka is not reachable"), (name, lines)
        assert broker in lines[0] and "Connection refused" in lines[0], (name, lines)
        assert proc.returncode == 3, (name, proc.returncode, err[:2000])


def test_librdkafka_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A real producer against a closed port for 3 s: librdkafka retries the connection many
    times; the project's logger gets one line per facility and the last failure is kept."""
    from confluent_kafka import Producer

    from worker.stores.kafka import LibrdkafkaLog

    bridge = LibrdkafkaLog(interval_s=60.0)
    caplog.set_level(logging.DEBUG, logger="online_als.librdkafka")
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "logger": bridge,
                         "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 10})
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        producer.poll(0.1)
    left_out = sum(bridge._left_out.values())
    records = [r for r in caplog.records if r.name == "online_als.librdkafka"]
    assert left_out >= 2, left_out  # librdkafka did retry, and those lines were left out
    facilities = [r.getMessage().split(" ", 1)[0] for r in records]
    assert len(facilities) == len(set(facilities)) and "FAIL" in facilities, facilities
    assert all(r.levelno == logging.DEBUG for r in records if r.getMessage().startswith("FAIL"))
    assert bridge.last_failure is not None and "Connection refused" in bridge.last_failure
