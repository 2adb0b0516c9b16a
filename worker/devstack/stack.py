"""`Stack`: bring the selected local servers up, down, and report their status."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from worker.devstack.cassandra import CassandraServer
from worker.devstack.config import ALL_COMPONENTS, CORE_COMPONENTS, StackConfig, StackError
from worker.devstack.kafka import KafkaServer
from worker.devstack.postgres import PostgresServer
from worker.devstack.prometheus import PrometheusServer
from worker.devstack.redis import RedisReplicaServer, RedisServer
from worker.devstack.servers import Server, ServerStatus, StartReport
from worker.devstack.serving import ServingServer

log = logging.getLogger("worker.devstack")

SERVER_CLASSES: dict[str, type[Server]] = {
    "redis": RedisServer,
    "kafka": KafkaServer,
    "cassandra": CassandraServer,
    "prometheus": PrometheusServer,
    "postgres": PostgresServer,
    "redis-replica": RedisReplicaServer,
    "serving": ServingServer,
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
        if self.config.secure:
            from worker.devstack.secure import SECURE_SERVER_CLASSES

            if name not in SECURE_SERVER_CLASSES:
                raise StackError(f"{name} is not part of the secure stack; choose from "
                                 f"{list(SECURE_SERVER_CLASSES)}")
            return SECURE_SERVER_CLASSES[name](self.config)
        return SERVER_CLASSES[name](self.config)

    def up(self, components: Iterable[str] | None = None) -> dict[str, StartReport]:
        """Start what is not running yet and wait until all of it is ready.

        Servers that already run are left alone; a dead one (stale PID file) is restarted.
        Every server is prepared first (install, jars, config, format), so a failure there
        starts nothing; then all are spawned together and polled until ready, each with a
        hard timeout. Raises StackError listing every server that failed, with its last log
        lines; servers that did come up are left running.
        """
        names = select_components(components)
        reports: dict[str, StartReport] = {}
        with self._lock():
            to_start: list[Server] = []
            waiting: list[Server] = []
            for name in names:
                server = self.server(name)
                st = server.status()
                if st.running:
                    log.info("%s: already running (pid %s, port %d)", name, st.pid, st.port)
                    reports[name] = StartReport(name, started=False, pid=st.pid)
                elif st.pid_alive and st.pid is not None:
                    # Alive but not answering: maybe a start still in progress; wait for it.
                    log.info("%s: pid %d alive, port closed; waiting for it", name, st.pid)
                    server.expect_ready(st.pid)
                    waiting.append(server)
                    reports[name] = StartReport(name, started=False, pid=st.pid)
                else:
                    if st.pid is not None:
                        log.info("%s: removing stale pid file (pid %d is dead)", name, st.pid)
                        server.pid_file.unlink(missing_ok=True)
                    server.check_ports_free()
                    to_start.append(server)
            for server in to_start:
                server.prepare()
            for server in to_start:
                pid = server.spawn()
                server.expect_ready(pid)
                log.info("%s: spawned pid %d", server.name, pid)
                waiting.append(server)
                reports[server.name] = StartReport(
                    server.name, started=True, pid=pid, steps=server.steps
                )
            errors = self._wait_all(waiting)
        for report in reports.values():
            if report.started and report.name not in errors:
                log.info("%s", report.summary())
        if errors:
            raise StackError("\n".join(errors.values()))
        return reports

    @staticmethod
    def _wait_all(servers: list[Server]) -> dict[str, str]:
        """Poll every server until ready or failed; returns error messages by name."""
        errors: dict[str, str] = {}
        pending = list(servers)
        while pending:
            for server in list(pending):
                try:
                    ready = server.poll_ready()
                except StackError as exc:
                    errors[server.name] = str(exc)
                    pending.remove(server)
                    continue
                if ready:
                    took = time.monotonic() - server.spawned_at
                    server.steps["start+ready"] = took
                    log.info("%s: ready on port %d after %.1fs", server.name, server.port, took)
                    pending.remove(server)
            if pending:
                time.sleep(0.2)
        return errors

    def down(self, components: Iterable[str] | None = None) -> list[str]:
        """Stop the given servers (default: every one with a PID file), by recorded PID only.

        Returns the names of the servers that were stopped."""
        default = CORE_COMPONENTS if self.config.secure else ALL_COMPONENTS
        names = list(components) if components else list(default)
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
        elif self.config.secure:
            names = list(CORE_COMPONENTS)
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
