"""Kafka 4.1 in KRaft mode, one node that is broker and controller, jars from Maven Central."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from worker.devstack.config import StackConfig, StackError
from worker.devstack.servers import Server, java_env
from worker.devstack.tools import render_template, require_java, resolve_jars

KAFKA_JAVA_VERSIONS = tuple(range(17, 40))
READY_LINE = "Kafka Server started"


class KafkaServer(Server):
    name = "kafka"
    start_timeout_s = 90.0

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.data_dir = self.home / "data"
        self.properties = self.home / "server.properties"
        self.log4j = self.home / "log4j2.xml"
        self.jar_dir: Path | None = None

    def ports(self) -> dict[str, int]:
        return {
            "kafka_port": self.config.kafka_port,
            "kafka_controller_port": self.config.kafka_controller_port,
        }

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    def prepare(self) -> None:
        require_java(self.config.java, KAFKA_JAVA_VERSIONS, "Kafka")
        with self.step("resolve jars"):
            self.jar_dir, _ = resolve_jars(
                "kafka",
                self.config.kafka_version,
                self.deploy_file("kafka", "pom.xml"),
                self.config.jar_cache_dir,
                self.config.mvn,
                "kafka.version",
            )
        with self.step("write config"):
            self.write_config()
        with self.step("format"):
            self.format_storage()

    def write_config(self) -> None:
        self.ensure_dirs(self.data_dir)
        render_template(
            self.deploy_file("kafka", "server.properties"),
            self.properties,
            {
                "host": self.config.host,
                "port": self.config.kafka_port,
                "controller_port": self.config.kafka_controller_port,
                "data_dir": self.data_dir,
            },
        )
        self.log4j.write_text(self.deploy_file("kafka", "log4j2.xml").read_text())

    def cluster_id(self) -> str:
        """A 22-character base64 id, created once and kept beside the data."""
        path = self.home / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        path.write_text(cid + "\n")
        return cid

    def format_storage(self) -> None:
        """Format the log dir once (what bin/kafka-storage.sh format does)."""
        if (self.data_dir / "meta.properties").exists():
            return
        # Static voter set (controller.quorum.voters): no --standalone.
        cmd = [
            *self.java_prefix(),
            "kafka.tools.StorageTool", "format",
            "--cluster-id", self.cluster_id(),
            "--config", str(self.properties),
            "--ignore-formatted",
        ]  # fmt: skip
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=java_env(), timeout=120, check=False
        )
        if p.returncode != 0:
            out = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
            raise StackError(f"kafka: storage format failed (exit {p.returncode}):\n{out}")

    def java_prefix(self) -> list[str]:
        assert self.jar_dir is not None, "prepare() resolves the jars first"
        return [
            str(self.config.java),
            f"-Dlog4j2.configurationFile={self.log4j}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-Djava.awt.headless=true",
            "-cp", f"{self.jar_dir}/*",  # Kafka's jars only, never Cassandra's
        ]  # fmt: skip

    def command(self) -> list[str]:
        prefix = self.java_prefix()
        # Heap and GC flags as bin/kafka-server-start.sh, with a heap for a small machine.
        jvm = [
            f"-Xmx{self.config.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
        ]
        return [prefix[0], *jvm, *prefix[1:], "kafka.Kafka", str(self.properties)]

    def spawn_env(self) -> dict[str, str]:
        return java_env()

    def is_ready(self, new_log: str) -> bool:
        # The port binds before the broker is unfenced; this line comes after.
        return READY_LINE in new_log
