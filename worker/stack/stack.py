"""`Stack`: bring the selected local servers up, down, and report their status."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from worker.stack.cassandra import CassandraServer
from worker.stack.config import ALL_COMPONENTS, CORE_COMPONENTS, StackConfig, StackError
from worker.stack.kafka import KafkaServer
from worker.stack.postgres import PostgresServer
from worker.stack.prometheus import PrometheusServer
from worker.stack.redis import RedisServer
from worker.stack.servers import Server, ServerStatus, StartReport

log = logging.getLogger("worker.stack")

SERVER_CLASSES: dict[str, type[Server]] = {
    "redis": RedisServer,
    "kafka": KafkaServer,
    "cassandra": CassandraServer,
    "prometheus": PrometheusServer,
    "postgres": PostgresServer,
}


def select_components(
    only: Iterable[str] | None = None, with_: Iterable[str] | None = None
) -> list[str]:
    """`only` replaces the default (redis, kafka, cassandra); `with_` adds to it."""
    chosen = list(only) if only else list(CORE_COMPONENTS)
    chosen += [c for c in (with_ or ()) if c not in chosen]
    unknown = [c for c in chosen if c not in ALL_COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; choose from {list(ALL_COMPONENTS)}")
    return [c for c in ALL_COMPONENTS if c in chosen]  # canonical order


class Stack:
    """The local servers under one runtime directory.

    >>> stack = Stack(StackConfig.from_env())      # doctest: +SKIP
    >>> stack.up(["redis", "kafka"])                # doctest: +SKIP
    >>> stack.status()["kafka"].running            # doctest: +SKIP
    True
    """

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig.from_env()

    def server(self, name: str) -> Server:
        if name not in SERVER_CLASSES:
            raise StackError(f"unknown component {name!r}; choose from {list(ALL_COMPONENTS)}")
        return SERVER_CLASSES[name](self.config)

    def up(self, components: Iterable[str] | None = None) -> dict[str, StartReport]:
        """Start what is not running yet and wait until all of it is ready.

        Servers that already run are left alone; a dead one (stale PID file) is restarted.
        All spawned servers start together, then each is waited for with a hard timeout.
        Raises StackError naming the first server that failed (with its last log lines).
        """
        names = select_components(components)
        reports: dict[str, StartReport] = {}
        pending: list[tuple[Server, int, float]] = []
        with self._lock():
            for name in names:
                server = self.server(name)
                st = server.status()
                if st.running:
                    log.info("%s: already running (pid %s, port %d)", name, st.pid, st.port)
                    reports[name] = StartReport(name, started=False, pid=st.pid)
                    continue
                if st.pid_alive and st.pid is not None:
                    # Alive but not answering: maybe a start still in progress; wait for it.
                    log.info("%s: pid %d alive, port closed; waiting for it", name, st.pid)
                    pending.append((server, st.pid, time.monotonic()))
                    reports[name] = StartReport(name, started=False, pid=st.pid)
                    continue
                if st.pid is not None:
                    log.info("%s: removing stale pid file (pid %d is dead)", name, st.pid)
                    server.pid_file.unlink(missing_ok=True)
                server.check_ports_free()
                server.prepare()
                t0 = time.monotonic()
                pid = server.spawn()
                log.info("%s: spawned pid %d", name, pid)
                pending.append((server, pid, t0))
                reports[name] = StartReport(name, started=True, pid=pid, steps=server.steps)
            for server, pid, t0 in pending:
                server.wait_ready(pid)
                server.steps["start+ready"] = time.monotonic() - t0
                log.info("%s: ready on port %d after %.1fs", server.name, server.port,
                         server.steps["start+ready"])  # fmt: skip
        for report in reports.values():
            if report.started:
                log.info("%s", report.summary())
        return reports

    def down(self, components: Iterable[str] | None = None) -> list[str]:
        """Stop the given servers (default: every one with a PID file), by recorded PID only.

        Returns the names of the servers that were stopped."""
        names = list(components) if components else list(ALL_COMPONENTS)
        stopped = []
        with self._lock():
            # Reverse order: clients of a server (none yet) would go before the server.
            for name in reversed(select_components(names)):
                if self.server(name).stop():
                    stopped.append(name)
        return stopped

    def status(self, components: Iterable[str] | None = None) -> dict[str, ServerStatus]:
        """Truthful status: running = recorded PID alive AND port answers.

        Default: the core servers, plus any optional one that has a PID file."""
        if components:
            names = select_components(components)
        else:
            extra = [c for c in ALL_COMPONENTS if self.server(c).pid_file.exists()]
            names = select_components(None, extra)
        return {name: self.server(name).status() for name in names}

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up`/`down` at a time per runtime dir (two test sessions, two shells)."""
        self.config.runtime_dir.mkdir(parents=True, exist_ok=True)
        with (self.config.runtime_dir / ".stack.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
