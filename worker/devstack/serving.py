"""``online-als serve`` as an optional local-stack component (``online-als stack up --with
serving``): the HTTP API on ``serving_port`` (8080) with ``serving_workers`` processes, over
the stack's Redis. The key prefix and every other setting come from the environment the stack
command runs in (``ONLINE_ALS_REDIS__KEY_PREFIX``, ``ONLINE_ALS_CONFIG``, ...), as for any
``online-als`` process.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from worker.devstack.servers import Server


class ServingServer(Server):
    name = "serving"
    start_timeout_s = 60.0

    def ports(self) -> dict[str, int]:
        return {"serving_port": self.config.serving_port}

    @property
    def log_file(self) -> Path:
        return self.out_file  # uvicorn and the service log to stderr

    def prepare(self) -> None:
        with self.step("prepare"):
            self.ensure_dirs(self.log_dir)

    def command(self) -> list[str]:
        c = self.config
        return [sys.executable, "-m", "worker.cli.main", "serve", "--host", c.host,
                "--port", str(c.serving_port), "--workers", str(c.serving_workers),
                "--set", f"redis.host={c.host}", "--set", f"redis.port={c.redis_port}"]

    def cmd_marker(self) -> str:
        return f"worker.cli.main serve --host {self.config.host} --port {self.config.serving_port}"

    def is_ready(self, new_log: str) -> bool:
        """The process answers (``/healthz``); it is *ready* only once a model version exists
        (``/readyz``), which an empty stack does not have yet."""
        url = f"http://{self.config.host}:{self.config.serving_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False
