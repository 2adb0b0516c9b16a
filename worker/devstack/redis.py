"""Redis from Debian's redis-server: loopback only, no persistence (tests start empty)."""

from __future__ import annotations

import socket
from pathlib import Path

from worker.devstack.servers import Server
from worker.devstack.tools import ensure_debian_package

REDIS_SERVER = "redis-server"


class RedisServer(Server):
    name = "redis"
    start_timeout_s = 15.0

    def ports(self) -> dict[str, int]:
        return {"redis_port": self.config.redis_port}

    @property
    def log_file(self) -> Path:
        return self.log_dir / "redis.log"

    def prepare(self) -> None:
        with self.step("install"):
            ensure_debian_package("redis-server", REDIS_SERVER)
        self.ensure_dirs(self.home / "data")

    def command(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--bind", self.config.host,
            "--port", str(self.config.redis_port),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",  # we keep the PID of the process we spawned
            "--dir", str(self.home / "data"),
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def cmd_marker(self) -> str:
        # Redis rewrites its process title to "redis-server HOST:PORT" (argv is gone).
        return f"redis-server {self.config.host}:{self.config.redis_port}"

    def is_ready(self, new_log: str) -> bool:
        return ping(self.config.host, self.config.redis_port)


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when Redis answers PING with PONG (raw RESP; no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False
