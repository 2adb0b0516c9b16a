"""Prometheus from Debian, started with a config file path argument (optional component)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from worker.devstack.config import StackConfig
from worker.devstack.servers import Server
from worker.devstack.tools import ensure_debian_package, render_template

PROMETHEUS = "prometheus"


class PrometheusServer(Server):
    name = "prometheus"
    start_timeout_s = 30.0

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.config_file = config.prometheus_config or self.home / "prometheus.yml"

    def ports(self) -> dict[str, int]:
        return {"prometheus_port": self.config.prometheus_port}

    @property
    def log_file(self) -> Path:
        return self.out_file  # Prometheus logs to stderr

    def prepare(self) -> None:
        with self.step("install"):
            ensure_debian_package("prometheus", PROMETHEUS)
        with self.step("write config"):
            self.ensure_dirs(self.home / "data")
            if self.config.prometheus_config is None:
                render_template(
                    self.deploy_file("prometheus", "prometheus.yml"),
                    self.config_file,
                    {"host": self.config.host, "port": self.config.prometheus_port},
                )

    def command(self) -> list[str]:
        return [
            PROMETHEUS,
            f"--config.file={self.config_file}",
            f"--web.listen-address={self.config.host}:{self.config.prometheus_port}",
            f"--storage.tsdb.path={self.home / 'data'}",
            "--storage.tsdb.retention.time=2d",
            "--web.enable-lifecycle",  # POST /-/reload after editing the config
        ]

    def is_ready(self, new_log: str) -> bool:
        url = f"http://{self.config.host}:{self.config.prometheus_port}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False
