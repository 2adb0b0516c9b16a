"""The local stack (worker.devstack): fast unit checks, then checks on the real servers.

Tests marked `stack` use the one shared stack on the standard ports (Redis 6379, Kafka 9092,
Cassandra 9042). The fixture brings it up when needed and, unless ONLINE_ALS_STACK_KEEP=1,
takes down again only what it started itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.devstack import (
    CORE_COMPONENTS,
    Stack,
    StackConfig,
    StackError,
    cli,
    proc,
    select_components,
)
from worker.devstack.cassandra import CASSANDRA_JAVA_VERSIONS
from worker.devstack.redis import RedisServer, ping
from worker.devstack.tools import render_template, require_java

# ---- unit checks (no servers) ------------------------------------------------------------


def test_select_components_defaults_only_and_with() -> None:
    assert select_components() == ["redis", "kafka", "cassandra"]
    assert select_components(["kafka", "redis"]) == ["redis", "kafka"]
    assert select_components(None, ["postgres"]) == ["redis", "kafka", "cassandra", "postgres"]
    with pytest.raises(StackError, match="unknown component"):
        select_components(["zookeeper"])


def test_config_env_overrides(tmp_path: Path) -> None:
    env = {
        "ONLINE_ALS_STACK_DIR": str(tmp_path / "rt"),
        "ONLINE_ALS_STACK_KAFKA_PORT": "19092",
        "ONLINE_ALS_STACK_REDIS_PORT": "16379",
        "ONLINE_ALS_STACK_TIMEOUT_SCALE": "2.5",
    }
    cfg = StackConfig.from_env(env, cassandra_port=19042)
    assert cfg.runtime_dir == tmp_path / "rt"
    assert (cfg.kafka_port, cfg.redis_port, cfg.cassandra_port) == (19092, 16379, 19042)
    assert cfg.timeout_scale == 2.5
    assert StackConfig.from_env({}).kafka_port == 9092
    with pytest.raises(StackError, match="ONLINE_ALS_STACK_REDIS_PORT"):
        StackConfig.from_env({"ONLINE_ALS_STACK_REDIS_PORT": "six"})


def test_render_template_rejects_unknown_placeholder(tmp_path: Path) -> None:
    src = tmp_path / "t.conf"
    src.write_text("port=@{port}\nkeep=${sys:x}\n")
    render_template(src, tmp_path / "out.conf", {"port": 1})
    assert (tmp_path / "out.conf").read_text() == "port=1\nkeep=${sys:x}\n"
    src.write_text("@{nope}")
    with pytest.raises(StackError, match="nope"):
        render_template(src, tmp_path / "out.conf", {})


def test_busy_port_is_reported_with_its_owner(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = RedisServer(StackConfig(runtime_dir=tmp_path, redis_port=port))
        with pytest.raises(StackError, match=rf"port {port}.*busy.*pid {os.getpid()}"):
            server.check_ports_free()
        st = server.status()
        assert not st.running and st.port_open and "held by another process" in st.detail


def test_status_of_never_started_stack(tmp_path: Path) -> None:
    cfg = StackConfig(runtime_dir=tmp_path, redis_port=_free_port(), kafka_port=_free_port(),
                      cassandra_port=_free_port())  # fmt: skip
    statuses = Stack(cfg).status()
    assert list(statuses) == list(CORE_COMPONENTS)
    assert all(not s.running and s.pid is None for s in statuses.values())


def test_cassandra_refuses_a_too_new_java(tmp_path: Path) -> None:
    # a stand-in `java` that reports version 25 exactly as a JDK does (on stderr)
    java25 = tmp_path / "java"
    java25.write_text('#!/bin/sh\necho \'openjdk version "25.0.1" 2025-10-21\' >&2\n')
    java25.chmod(0o755)
    with pytest.raises(StackError, match="needs Java 11 or 17.*Java 25"):
        require_java(java25, CASSANDRA_JAVA_VERSIONS, "Cassandra 5.0")


@pytest.mark.stack
def test_server_that_dies_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    class BrokenRedis(RedisServer):
        def command(self) -> list[str]:
            return [*super().command(), "--no-such-option", "1"]

    server = BrokenRedis(StackConfig(runtime_dir=tmp_path, redis_port=_free_port()))
    server.prepare()
    pid = server.spawn()
    with pytest.raises(StackError, match=r"(?s)died during start.*no-such-option"):
        server.wait_ready(pid)
    assert not server.pid_file.exists()


# ---- the real stack ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(StackConfig.from_env())
    was_running = {n for n, st in s.status(CORE_COMPONENTS).items() if st.running}
    try:
        s.up(CORE_COMPONENTS)
    except StackError as exc:
        pytest.fail(f"stack up failed: {exc}")
    yield s
    started_here = [n for n in CORE_COMPONENTS if n not in was_running]
    if started_here and os.environ.get("ONLINE_ALS_STACK_KEEP") != "1":
        s.down(started_here)


@pytest.mark.stack
def test_status_after_up_reports_all_running(stack: Stack) -> None:
    statuses = stack.status(CORE_COMPONENTS)
    for name, st in statuses.items():
        assert st.running, f"{name}: {st.detail}"
        assert st.pid_alive and st.port_open and st.pid is not None
        assert st.rss_mib is not None and st.rss_mib > 1
    assert ping(stack.config.host, stack.config.redis_port)


@pytest.mark.stack
def test_up_twice_is_harmless(stack: Stack) -> None:
    before = {n: st.pid for n, st in stack.status(CORE_COMPONENTS).items()}
    t0 = time.monotonic()
    reports = stack.up(CORE_COMPONENTS)
    assert time.monotonic() - t0 < 10
    assert all(not r.started for r in reports.values())
    assert {n: r.pid for n, r in reports.items()} == before


@pytest.mark.stack
def test_kill9_redis_is_reported_down_then_restarted(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    old_pid = stack.status(["redis"])["redis"].pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    assert proc.wait_dead(old_pid, 10)

    st = stack.status(["redis"])["redis"]
    assert not st.running and not st.pid_alive and st.pid == old_pid
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == cli.EXIT_DOWN
    assert json.loads(capsys.readouterr().out)["redis"]["running"] is False

    reports = stack.up(CORE_COMPONENTS)
    assert reports["redis"].started and reports["redis"].pid != old_pid
    assert not reports["kafka"].started and not reports["cassandra"].started
    assert all(st.running for st in stack.status(CORE_COMPONENTS).values())
    assert cli.main(["status"]) == cli.EXIT_OK


@pytest.mark.stack
def test_down_stops_by_recorded_pid_and_removes_pid_file(tmp_path: Path) -> None:
    # Its own runtime dir and port: the shared stack is not touched.
    own = Stack(StackConfig(runtime_dir=tmp_path, redis_port=_free_port()))
    reports = own.up(["redis"])
    pid = reports["redis"].pid
    assert pid is not None and proc.pid_alive(pid)
    assert own.down(["redis"]) == ["redis"]
    assert not proc.pid_alive(pid)
    assert not (tmp_path / "run" / "redis.pid").exists()
    assert own.down(["redis"]) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
