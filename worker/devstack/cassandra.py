"""Cassandra 5.0, one node, jars from Maven Central, on OpenJDK 17 (18+ is refused)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from worker.devstack.config import StackConfig, StackError
from worker.devstack.servers import Server, java_env
from worker.devstack.tools import render_template, require_java, resolve_jars

CASSANDRA_JAVA_VERSIONS = (11, 17)
READY_LINE = "Startup complete"
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"


class CassandraServer(Server):
    name = "cassandra"
    start_timeout_s = 180.0

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.data_dir = self.home / "data"
        self.conf_dir = self.home / "conf"
        self.yaml = self.conf_dir / "cassandra.yaml"
        self.logback = self.conf_dir / "logback.xml"
        self.jar_dir: Path | None = None
        self._next_cql_try = 0.0

    def ports(self) -> dict[str, int]:
        return {
            "cassandra_port": self.config.cassandra_port,
            "cassandra_storage_port": self.config.cassandra_storage_port,
        }

    @property
    def log_file(self) -> Path:
        return self.log_dir / "system.log"

    def prepare(self) -> None:
        require_java(self.config.java, CASSANDRA_JAVA_VERSIONS, "Cassandra 5.0")
        with self.step("resolve jars"):
            self.jar_dir, _ = resolve_jars(
                "cassandra",
                self.config.cassandra_version,
                self.deploy_file("cassandra", "pom.xml"),
                self.config.jar_cache_dir,
                self.config.mvn,
                "cassandra.version",
            )
        with self.step("write config"):
            self.write_config()

    def write_config(self) -> None:
        # JNA unpacks its native library into jna.tmpdir, which must allow exec.
        self.ensure_dirs(self.data_dir, self.conf_dir, self.home / "tmp")
        render_template(
            self.deploy_file("cassandra", "cassandra.yaml"),
            self.yaml,
            {
                "host": self.config.host,
                "port": self.config.cassandra_port,
                "storage_port": self.config.cassandra_storage_port,
                "data_dir": self.data_dir,
            },
        )
        self.logback.write_text(self.deploy_file("cassandra", "logback.xml").read_text())

    def jvm_options(self) -> list[str]:
        """Options from deploy/local/cassandra/jvm17-server.options, one or two per line."""
        opts: list[str] = []
        text = self.deploy_file("cassandra", "jvm17-server.options").read_text()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                opts.extend(line.split())
        return opts

    def command(self) -> list[str]:
        assert self.jar_dir is not None, "prepare() resolves the jars first"
        jamm = sorted(self.jar_dir.glob("jamm-*.jar"))
        if not jamm:
            raise StackError(f"cassandra: no jamm-*.jar in {self.jar_dir}; delete it to re-resolve")
        heap = self.config.cassandra_heap
        return [
            str(self.config.java),
            f"-Xms{self.config.cassandra_heap_min}",
            f"-Xmx{heap}",
            *self.jvm_options(),
            f"-javaagent:{jamm[-1]}",
            f"-Dcassandra.config=file://{self.yaml}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.log_dir}",
            "-Dcassandra-foreground=yes",
            f"-Dlogback.configurationFile={self.logback}",
            f"-Djna.tmpdir={self.home / 'tmp'}",
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            "-cp", f"{self.conf_dir}:{self.jar_dir}/*",  # Cassandra's jars only, never Kafka's
            MAIN_CLASS,
        ]  # fmt: skip

    def spawn_env(self) -> dict[str, str]:
        return java_env()

    def is_ready(self, new_log: str) -> bool:
        if READY_LINE not in new_log:
            return False
        # A real query, not just the log line; the driver is slow, so not on every poll.
        now = time.monotonic()
        if now < self._next_cql_try:
            return False
        self._next_cql_try = now + 2.0
        return cql_ping(self.config.host, self.config.cassandra_port)


def cql_ping(host: str, port: int, timeout: float = 10.0) -> bool:
    """True when `SELECT release_version FROM system.local` works via cassandra-driver."""
    try:
        from cassandra.cluster import Cluster
    except ImportError:  # the driver is a project dependency; the port check must do
        return True
    # The driver logs connection errors at WARNING while the node is still starting.
    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    cluster = Cluster(
        [host], port=port, connect_timeout=timeout, control_connection_timeout=timeout
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=timeout).one()
        return row is not None
    except Exception:  # noqa: BLE001 - any driver error means "not ready yet"
        return False
    finally:
        cluster.shutdown()
        driver_log.setLevel(level)
