"""One typed, frozen configuration object for every online-als process.

Sources, lowest to highest precedence: defaults < TOML file < environment variables
(prefix ``ONLINE_ALS_``, sections joined by ``__``) < CLI flags (``--set section.key=value``).

>>> cfg = load_config(overrides={"model.rank": "32"}, environ={})
>>> cfg.model.rank
32
>>> cfg.redis.password.get_secret_value() if cfg.redis.password else None
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "ONLINE_ALS_"
ENV_NESTED = "__"
CONFIG_FILE_ENV = "ONLINE_ALS_CONFIG"


class ConfigError(ValueError):
    """Raised at start when a setting is invalid; the message names the setting and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "ratings"
    dead_letter_topic: str = "ratings.dlq"
    group_id: str = "online-als"
    partitions: int = Field(6, ge=1, description="partitions created for the topic when missing")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    session_timeout_ms: int = Field(10000, ge=1000)


class RedisSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    password: SecretStr | None = None
    key_prefix: str = "oals"
    cluster: bool = False
    socket_timeout_s: float = Field(5.0, gt=0)

    @field_validator("key_prefix")
    @classmethod
    def _prefix_has_no_braces(cls, value: str) -> str:
        if not value or "{" in value or "}" in value or " " in value:
            raise ValueError("use a non-empty prefix without braces or spaces, e.g. 'oals'")
        return value


class CassandraSettings(_Section):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = Field(9042, ge=1, le=65535)
    keyspace: str = "online_als"
    username: str | None = None
    password: SecretStr | None = None
    replication: str = Field(
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        description="CQL replication map; NetworkTopologyStrategy in production",
    )
    local_dc: str = "datacenter1"
    enabled: bool = True

    @field_validator("keyspace")
    @classmethod
    def _keyspace_is_identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or value[0].isdigit() or len(value) > 48:
            raise ValueError("use letters, digits and '_' (max 48, not starting with a digit)")
        return value

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value


class ModelSettings(_Section):
    mode: Literal["explicit", "implicit"] = "explicit"
    rank: int = Field(64, ge=1, le=1024)
    learning_rate: float = Field(0.01, gt=0, le=1)
    regularization: float = Field(0.05, ge=0)
    bias_regularization: float = Field(0.05, ge=0)
    gradient_clip: float = Field(5.0, gt=0)
    init_scale: float = Field(0.1, gt=0, description="explicit: N(0, scale) for new ids")
    implicit_user_init_scale: float = Field(0.0, ge=0, description="0: first fold-in is exact")
    implicit_item_init_scale: float = Field(0.01, gt=0)
    seed: int = 42
    global_mean: float = 3.5
    rating_min: float = 0.5
    rating_max: float = 5.0
    alpha: float = Field(1.0, gt=0, description="implicit confidence scale, c = alpha * weight")
    implicit_regularization: float = Field(0.05, ge=0, description="lambda of the retrain fit")
    foldin_regularization: float = Field(
        20.0, gt=0, description="lambda in the online fold-in's (Y^T Y + lambda I): damps the "
        "per-event Newton step, whose Hessian omits the user's own history")
    update_items: bool = True
    gram_refresh_s: float = Field(
        30.0, ge=0, description="implicit: recompute the cached Gram inverses this often (0 = never)")
    event_weights: str = "view=1,click=1,like=4,dislike=-4,neutral=0.5,purchase=8"


    def init_scales(self) -> tuple[float, float]:
        """(user, item) scales of the N(0, scale) vectors given to new ids."""
        if self.mode == "explicit":
            return self.init_scale, self.init_scale
        return self.implicit_user_init_scale, self.implicit_item_init_scale


class WorkerSettings(_Section):
    batch_max_events: int = Field(5000, ge=1, le=1_000_000)
    batch_max_wait_ms: int = Field(100, ge=1)
    max_id_bytes: int = Field(256, ge=1, le=4096)
    heartbeat_ttl_s: int = Field(15, ge=1)
    prequential_window: int = Field(10000, ge=10)
    persist_interval_s: float = Field(5.0, gt=0)
    shutdown_persist_timeout_s: float = Field(60.0, ge=0)
    stall_timeout_s: float = Field(
        120.0, gt=0, description="/healthz fails when the loop has not come round this long")
    reconnect_backoff_max_s: float = Field(30.0, gt=0)
    name: str = Field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")


class RetrainSettings(_Section):
    period_s: float = Field(0, ge=0, description="0 disables the periodic trigger")
    min_new_ratings: int = Field(0, ge=0)
    iterations: int = Field(15, ge=1)
    explicit_reg: float = Field(0.12, ge=0, description="ALS-WR lambda (times each row's count)")
    explicit_reg_bias: float = Field(0.05, ge=0)
    warm_start_iterations: int = Field(5, ge=1)
    warm_start: bool = False
    holdout_fraction: float = Field(
        0.02, ge=0, lt=1, description="last part of each partition's log held out for the gate "
        "(then replayed through the online kernels before the switch)")
    gate_margin: float = Field(0.02, ge=0, description="relative worsening allowed")
    keep_last: int = Field(5, ge=1)
    keep_promoted_days: float = Field(30, ge=0)
    chunk_rows: int = Field(1_000_000, ge=1000)


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    pushgateway: str | None = None


class Settings(_Section):
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    cassandra: CassandraSettings = CassandraSettings()
    model: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    retrain: RetrainSettings = RetrainSettings()
    metrics: MetricsSettings = MetricsSettings()

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret masked (safe to log)."""
        return _redact(self.model_dump())


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    return value


def _set_path(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.lower().split(".")
    if len(parts) != 2 or parts[0] not in Settings.model_fields:
        sections = ", ".join(Settings.model_fields)
        raise ConfigError(
            f"{source}: unknown setting {dotted!r}; use <section>.<key> with section in {sections}"
        )
    tree.setdefault(parts[0], {})[parts[1]] = value


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        if ENV_NESTED not in rest:
            continue  # other online-als variables (e.g. ONLINE_ALS_STACK_DIR) are not settings
        section, key = rest.split(ENV_NESTED, 1)
        _set_path(tree, f"{section}.{key}", value, f"environment variable {name}")
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in top.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _explain(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        env = ENV_PREFIX + ENV_NESTED.join(str(p).upper() for p in item["loc"])
        lines.append(
            f"  {where}: {item['msg']} (got {item.get('input')!r}); fix it in the TOML file, "
            f"with {env}=..., or with --set {where}=..."
        )
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the frozen settings from file, environment and CLI overrides.

    Raises ConfigError with a message that names each bad setting and how to fix it.
    """
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    file_path = path or env.get(CONFIG_FILE_ENV)
    if file_path:
        p = Path(file_path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass an existing TOML file or unset {CONFIG_FILE_ENV}")
        try:
            tree = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
        for section in tree:
            if section not in Settings.model_fields:
                raise ConfigError(f"config file {p}: unknown section [{section}]")
    tree = _merge(tree, _from_env(env))
    cli: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        _set_path(cli, dotted, value, "--set")
    tree = _merge(tree, cli)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def environ_for(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that reproduces ``settings`` in a child process (secrets included, so
    never log it): ``base`` (default ``os.environ``) without its ONLINE_ALS_ variables, plus
    one variable per setting. ``worker.name`` is left out so each process gets its own."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(ENV_PREFIX)}
    for section, values in settings.model_dump().items():
        for key, value in values.items():
            if value is None or (section, key) == ("worker", "name"):
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[f"{ENV_PREFIX}{section.upper()}{ENV_NESTED}{key.upper()}"] = str(value)
    return env


def parse_set_flags(pairs: list[str] | None) -> dict[str, str]:
    """Turn ``["model.rank=32"]`` into ``{"model.rank": "32"}``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected section.key=value, e.g. --set model.rank=32")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out
