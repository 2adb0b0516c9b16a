"""Configuration of the local stack: directories, ports, versions, heaps and timeouts.

Nothing reads the environment at import time: `StackConfig.from_env()` does it when asked.
Every field can be overridden by ``ONLINE_ALS_STACK_<FIELD NAME IN CAPITALS>``
(``runtime_dir`` also by ``ONLINE_ALS_STACK_DIR``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "ONLINE_ALS_STACK_"

CORE_COMPONENTS: tuple[str, ...] = ("redis", "kafka", "cassandra")
OPTIONAL_COMPONENTS: tuple[str, ...] = ("prometheus", "postgres", "redis-replica", "serving")
ALL_COMPONENTS: tuple[str, ...] = CORE_COMPONENTS + OPTIONAL_COMPONENTS


#: Ports of the secure stack: none clashes with the normal stack's defaults.
SECURE_PORTS: dict[str, int] = {"redis_port": 6390, "kafka_port": 9192,
                                "kafka_controller_port": 9193, "cassandra_port": 9142,
                                "cassandra_storage_port": 7100}


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _default_runtime_dir() -> Path:
    return _cache_home() / "online-als" / "stack"


def _default_jar_cache() -> Path:
    return _cache_home() / "online-als" / "jars"


def _default_deploy_dir() -> Path:
    # worker/devstack/config.py -> repository root; works for a clone and an editable install.
    return Path(__file__).resolve().parents[2] / "deploy" / "local"


class StackError(RuntimeError):
    """A stack operation failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class StackConfig:
    """Where and how the local servers run. All servers bind to `host` (loopback)."""

    runtime_dir: Path = field(default_factory=_default_runtime_dir)
    jar_cache_dir: Path = field(default_factory=_default_jar_cache)
    deploy_dir: Path = field(default_factory=_default_deploy_dir)
    java: Path = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    mvn: str = "mvn"
    host: str = "127.0.0.1"

    redis_port: int = 6379
    # How Redis persists, as production runs it: "none" (tests start empty), "rdb" (snapshots
    # on `redis_save`'s schedule, and BGSAVE; loaded at start) or "aof" (append-only file,
    # appendfsync everysec, plus RDB preamble). `redis_save` "" saves only on BGSAVE/SAVE.
    redis_persistence: str = "none"
    redis_save: str = "3600 1 300 100 60 10000"
    # `redis-replica`: an asynchronous replica of the Redis above, to promote in failover drills
    # (`REPLICAOF NO ONE`); it persists the way the master does.
    redis_replica_port: int = 6380
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    prometheus_port: int = 9090
    postgres_port: int = 5432
    # `serving`: `online-als serve` (the HTTP API) over this stack's Redis
    serving_port: int = 8080
    serving_workers: int = 2

    kafka_version: str = "4.1.1"
    cassandra_version: str = "5.0.6"
    kafka_heap: str = "512m"
    cassandra_heap: str = "1G"
    # Cassandra mlockall()s its memory at start when it can (root can): an -Xms equal to
    # -Xmx would pin the whole heap in RAM, so start small and let the heap grow.
    cassandra_heap_min: str = "256m"

    # Optional user-supplied Prometheus config; the default scrapes Prometheus itself.
    prometheus_config: Path | None = None
    # Unix user that owns the throwaway PostgreSQL cluster (postgres refuses to run as root).
    postgres_user: str = "postgres"

    # Multiplies every server's start timeout (slow CI machines).
    timeout_scale: float = 1.0
    stop_timeout_s: float = 45.0

    # `stack up --secure`: TLS and authentication on Redis, Kafka and Cassandra (secure.py).
    secure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> StackConfig:
        """Defaults, then ``ONLINE_ALS_STACK_*`` variables, then explicit `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            names = [ENV_PREFIX + f.name.upper()]
            if f.name == "runtime_dir":
                names.insert(0, ENV_PREFIX + "DIR")
            raw = next((env[n] for n in names if env.get(n)), None)
            if raw is not None:
                values[f.name] = _convert(f.name, str(f.type), raw)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def secure_from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> StackConfig:
        """The secure stack: like :meth:`from_env` (Java, jars, heaps), but its own runtime
        dir and ports, so that it runs beside the normal stack. Overrides:
        ``ONLINE_ALS_STACK_SECURE_DIR`` and ``ONLINE_ALS_STACK_SECURE_<PORT FIELD>``."""
        env = os.environ if env is None else env
        base = cls.from_env(env)
        values: dict[str, Any] = dict(SECURE_PORTS)
        values["runtime_dir"] = base.runtime_dir.parent / f"{base.runtime_dir.name}-secure"
        if env.get(ENV_PREFIX + "SECURE_DIR"):
            values["runtime_dir"] = Path(env[ENV_PREFIX + "SECURE_DIR"]).expanduser()
        for name in SECURE_PORTS:
            raw = env.get(f"{ENV_PREFIX}SECURE_{name.upper()}")
            if raw:
                values[name] = _convert(name, "int", raw)
        values.update(overrides)
        return dataclasses.replace(base, secure=True, **values)

    def port_of(self, component: str) -> int:
        """The main (client) port of a component."""
        return int(getattr(self, f"{component}_port"))


def _convert(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "Path" in type_name:
            return Path(raw).expanduser()
    except ValueError as exc:
        raise StackError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw
