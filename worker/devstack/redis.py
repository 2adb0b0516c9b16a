"""Redis from Debian's redis-server on loopback: no persistence by default (tests start empty),
or persisted the way production runs it (``redis_persistence`` rdb | aof), and an optional
asynchronous replica (component ``redis-replica``) for failover drills."""

from __future__ import annotations

import socket
from pathlib import Path

from worker.devstack.config import StackError
from worker.devstack.servers import Server
from worker.devstack.tools import ensure_debian_package

REDIS_SERVER = "redis-server"
PERSISTENCE_MODES = ("none", "rdb", "aof")


class RedisServer(Server):
    name = "redis"
    start_timeout_s = 15.0

    @property
    def redis_port(self) -> int:
        return self.config.redis_port

    def ports(self) -> dict[str, int]:
        return {"redis_port": self.redis_port}

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def prepare(self) -> None:
        if self.config.redis_persistence not in PERSISTENCE_MODES:
            raise StackError(f"ONLINE_ALS_STACK_REDIS_PERSISTENCE="
                             f"{self.config.redis_persistence!r}: choose one of "
                             f"{', '.join(PERSISTENCE_MODES)}")
        with self.step("install"):
            ensure_debian_package("redis-server", REDIS_SERVER)
        self.ensure_dirs(self.data_dir)

    def persistence_args(self) -> list[str]:
        mode = self.config.redis_persistence
        if mode == "none":
            return ["--save", "", "--appendonly", "no"]
        args = ["--save", self.config.redis_save, "--dbfilename", "dump.rdb"]
        if mode == "aof":
            args += ["--appendonly", "yes", "--appendfsync", "everysec",
                     "--appenddirname", "appendonly"]
        else:
            args += ["--appendonly", "no"]
        return args

    def command(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--bind", self.config.host,
            "--port", str(self.redis_port),
            *self.persistence_args(),
            # vector hashes in the compact listpack encoding (docs/redis-keys.md, Memory)
            "--hash-max-listpack-value", "2048",
            "--daemonize", "no",  # we keep the PID of the process we spawned
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def cmd_marker(self) -> str:
        # Redis rewrites its process title to "redis-server HOST:PORT" (argv is gone).
        return f"redis-server {self.config.host}:{self.redis_port}"

    def is_ready(self, new_log: str) -> bool:
        return ping(self.config.host, self.redis_port)


class RedisReplicaServer(RedisServer):
    """An asynchronous replica of the stack's Redis (``REPLICAOF host redis_port``)."""

    name = "redis-replica"

    @property
    def redis_port(self) -> int:
        return self.config.redis_replica_port

    def ports(self) -> dict[str, int]:
        return {"redis_replica_port": self.redis_port}

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", self.config.host, str(self.config.redis_port)]


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when Redis answers PING with PONG (raw RESP; no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False
