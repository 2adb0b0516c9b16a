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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from online_als import defaults as _D

ENV_PREFIX = "ONLINE_ALS_"
ENV_NESTED = "__"
CONFIG_FILE_ENV = "ONLINE_ALS_CONFIG"


class ConfigError(ValueError):
    """Raised at start when a setting is invalid; the message names the setting and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: A secret setting ``<key>`` can also be given as ``<key>_file`` = a path to a file holding it
#: (Kubernetes/compose secrets mounted as files); one trailing newline is dropped.
SECRET_FILE_SUFFIX = "_file"


def _readable_files(section: str, paths: dict[str, str | None]) -> None:
    for key, path in paths.items():
        if path and not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable"
            raise ValueError(f"{section}.{key}: file {path} {why}; mount it or fix the path")


def _cert_and_key(section: str, cert_key: str, cert: str | None,
                  key_key: str, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise ValueError(f"{section}.{cert_key} and {section}.{key_key} go together "
                         "(client certificate and its private key); set both or neither")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "ratings"
    dead_letter_topic: str = "ratings.dlq"
    group_id: str = "online-als"
    partitions: int = Field(6, ge=1, description="partitions created for the topic when missing")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="with a SASL_* security_protocol")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(None, description="or sasl_password_file=PATH")
    ssl_ca_location: str | None = Field(
        None, description="PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL)")
    ssl_certificate_location: str | None = Field(None, description="client certificate (PEM), mTLS")
    ssl_key_location: str | None = Field(None, description="its private key (PEM)")
    ssl_key_password: SecretStr | None = Field(
        None, description="when the key is encrypted; or ssl_key_password_file=PATH")
    ssl_endpoint_identification: bool = Field(
        True, description="check the broker's host name against its certificate")
    session_timeout_ms: int = Field(10000, ge=1000)

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _upper_mechanism(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs kafka.sasl_mechanism "
                "(SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN), kafka.sasl_username and "
                "kafka.sasl_password (or kafka.sasl_password_file)")
        if not sasl and self.sasl_mechanism:
            raise ValueError(f"kafka.sasl_mechanism is set but security_protocol is "
                             f"{self.security_protocol}; use SASL_SSL (or unset the mechanism)")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        files = {"ssl_ca_location": self.ssl_ca_location,
                 "ssl_certificate_location": self.ssl_certificate_location,
                 "ssl_key_location": self.ssl_key_location}
        if not tls and any(files.values()):
            raise ValueError("kafka.ssl_* files are set but security_protocol is "
                             f"{self.security_protocol}; use SSL or SASL_SSL")
        _cert_and_key("kafka", "ssl_certificate_location", self.ssl_certificate_location,
                      "ssl_key_location", self.ssl_key_location)
        _readable_files("kafka", files)
        return self


class RedisSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    username: str | None = Field(None, description="ACL user (Redis 6+); unset: the default user")
    password: SecretStr | None = Field(None, description="or password_file=PATH")
    tls: bool = Field(False, description="connect with TLS (rediss://)")
    tls_ca_file: str | None = Field(None, description="PEM CA bundle that signed the server's "
                                    "certificate; unset: the system's CAs")
    tls_cert_file: str | None = Field(None, description="client certificate (PEM), when the "
                                      "server asks for one (tls-auth-clients)")
    tls_key_file: str | None = Field(None, description="its private key (PEM)")
    tls_check_hostname: bool = Field(
        True, description="check the server's host name against its certificate")
    key_prefix: str = "oals"
    cluster: bool = False
    socket_timeout_s: float = Field(5.0, gt=0)
    max_keys_per_script: int = Field(
        128, ge=1, le=10000, description="vector keys one worker script call touches: Redis "
        "serves nothing else while a script runs, so this bounds the pause serving apps see")
    scripts_per_round_trip: int = Field(
        8, ge=1, le=10000, description="script calls sent per pipeline round trip: Redis runs "
        "a client's buffered commands back to back, so fewer lets it serve others in between")

    @model_validator(mode="after")
    def _consistent_security(self) -> RedisSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        if not self.tls and any(files.values()):
            raise ValueError("redis.tls_* files are set but redis.tls is false; set redis.tls=true")
        if self.username and not self.password:
            raise ValueError("redis.username needs redis.password (or redis.password_file)")
        _cert_and_key("redis", "tls_cert_file", self.tls_cert_file, "tls_key_file",
                      self.tls_key_file)
        _readable_files("redis", files)
        return self

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
    username: str | None = Field(None, description="PasswordAuthenticator user")
    password: SecretStr | None = Field(None, description="or password_file=PATH")
    tls: bool = Field(False, description="client-to-node encryption")
    tls_ca_file: str | None = Field(None, description="PEM CA bundle that signed the nodes' "
                                    "certificates; unset: the system's CAs")
    tls_cert_file: str | None = Field(None, description="client certificate (PEM), when the "
                                      "nodes require one (require_client_auth)")
    tls_key_file: str | None = Field(None, description="its private key (PEM)")
    tls_check_hostname: bool = Field(
        True, description="check each node's address against its certificate")
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

    @model_validator(mode="after")
    def _consistent_security(self) -> CassandraSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        if not self.tls and any(files.values()):
            raise ValueError("cassandra.tls_* files are set but cassandra.tls is false; "
                             "set cassandra.tls=true")
        if self.username and not self.password:
            raise ValueError("cassandra.username needs cassandra.password (or "
                             "cassandra.password_file)")
        _cert_and_key("cassandra", "tls_cert_file", self.tls_cert_file, "tls_key_file",
                      self.tls_key_file)
        _readable_files("cassandra", files)
        return self


#: The online_als.defaults constant of each learner setting (for the fix in error messages).
_DEFAULT_NAME = {
    "learning_rate": "LEARNING_RATE", "regularization": "REGULARIZATION",
    "bias_regularization": "BIAS_REGULARIZATION", "gradient_clip": "GRADIENT_CLIP",
    "bias_learning_rate": "BIAS_LEARNING_RATE", "acc_init": "ACC_INIT",
    "session_learning_rate": "SESSION_LEARNING_RATE",
    "session_regularization": "SESSION_REGULARIZATION", "session_seconds": "SESSION_SECONDS",
    "implicit_factor_learning_rate": "IMPLICIT_LEARNING_RATE",
    "implicit_factor_regularization": "IMPLICIT_REGULARIZATION",
    "implicit_factor_init_scale": "IMPLICIT_INIT_SCALE",
}


class ModelSettings(_Section):
    mode: Literal["explicit", "implicit"] = "explicit"
    rank: int = Field(_D.RANK, ge=1, le=1024)
    learning_rate: float = Field(_D.LEARNING_RATE, gt=0, le=1)
    regularization: float = Field(_D.REGULARIZATION, ge=0)
    bias_regularization: float = Field(_D.BIAS_REGULARIZATION, ge=0)
    gradient_clip: float = Field(_D.GRADIENT_CLIP, gt=0)
    init_scale: float = Field(_D.INIT_SCALE, gt=0, description="explicit: N(0, scale) for new ids")
    implicit_user_init_scale: float = Field(0.0, ge=0, description="0: first fold-in is exact")
    implicit_item_init_scale: float = Field(0.01, gt=0)
    seed: int = _D.SEED
    global_mean: float = _D.GLOBAL_MEAN
    rating_min: float = 0.5
    rating_max: float = 5.0
    alpha: float = Field(_D.IMPLICIT_ALPHA, gt=0,
                         description="implicit confidence scale, c = alpha * weight")
    implicit_regularization: float = Field(0.05, ge=0, description="lambda of the retrain fit")
    foldin_regularization: float = Field(
        20.0, gt=0, description="lambda in the online fold-in's (Y^T Y + lambda I): damps the "
        "per-event Newton step, whose Hessian omits the user's own history")
    update_items: bool = True
    gram_refresh_s: float = Field(
        30.0, ge=0, description="implicit: recompute the cached Gram inverses this often (0 = never)")
    event_weights: str = "view=1,click=1,like=4,dislike=-4,neutral=0.5,purchase=8"
    # explicit mode's online learner (online_als.adaptive; docs/kernels.md)
    learner: Literal["adaptive", "sgd"] = Field(
        _D.LEARNER, description="explicit: adaptive = AdaGrad steps + session user bias "
        "(per-entity state in the Redis field `a`); sgd = plain biased-MF SGD")
    bias_learning_rate: float = Field(_D.BIAS_LEARNING_RATE, gt=0,
                                      description="adaptive: AdaGrad base step of the biases")
    # > 0 is also what makes an all-zero `a` row mean "not initialised" (AdaGrad sums start at
    # acc_init and only grow), so a version loaded without `a` gets fresh state per entity.
    acc_init: float = Field(_D.ACC_INIT, gt=0, description="adaptive: initial AdaGrad sum of "
                            "squared gradients (bounds the first step); must be > 0")
    session_learning_rate: float = Field(_D.SESSION_LEARNING_RATE, ge=0,
                                         description="adaptive: step of the session user bias")
    session_regularization: float = Field(_D.SESSION_REGULARIZATION, ge=0,
                                          description="adaptive: decay of the session bias")
    session_seconds: float = Field(_D.SESSION_SECONDS, ge=0, description="adaptive: the "
                                   "session bias restarts in each such period of event time "
                                   "(0: one session forever)")
    implicit_factor: bool = Field(_D.IMPLICIT, description="adaptive: SVD++-style implicit "
                                  "factor from the items a user rated (2x the state per entity)")
    implicit_factor_learning_rate: float = Field(_D.IMPLICIT_LEARNING_RATE, ge=0,
                                                 description="implicit_factor: step of z_i")
    implicit_factor_regularization: float = Field(_D.IMPLICIT_REGULARIZATION, ge=0,
                                                  description="implicit_factor: decay of z_i")
    implicit_factor_init_scale: float = Field(_D.IMPLICIT_INIT_SCALE, ge=0, description=
                                              "implicit_factor: N(0, scale) for new items' z_i")

    @model_validator(mode="after")
    def _consistent_model(self) -> ModelSettings:
        import math

        if not (math.isfinite(self.rating_min) and math.isfinite(self.rating_max)
                and self.rating_min < self.rating_max):
            raise ValueError(
                f"model.rating_min ({self.rating_min}) must be finite and below model.rating_max "
                f"({self.rating_max}); otherwise every rating would be dead-lettered")
        if not math.isfinite(self.global_mean):
            raise ValueError("model.global_mean must be finite")
        for name, const in _DEFAULT_NAME.items():
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"model.{name} must be a finite number (the learner's steps "
                                 f"would turn every vector into NaN); e.g. --set "
                                 f"model.{name}={getattr(_D, const)} (the default)")
        from online_als.events import ImplicitEventMap

        try:
            ImplicitEventMap.from_string(self.event_weights)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model.event_weights: {exc}") from None
        return self

    def adaptive_params(self) -> Any:
        """The :class:`online_als.adaptive.AdaptiveParams` of the worker's adaptive learner
        (the global mean is the version's, never a running mean: ``track_mean`` off)."""
        from online_als.adaptive import AdaptiveParams

        return AdaptiveParams(
            lr=self.learning_rate, lr_bias=self.bias_learning_rate, reg=self.regularization,
            reg_bias=self.bias_regularization, clip=self.gradient_clip, acc_init=self.acc_init,
            session_lr=self.session_learning_rate, session_reg=self.session_regularization,
            session_seconds=self.session_seconds, implicit=self.implicit_factor,
            implicit_lr=self.implicit_factor_learning_rate,
            implicit_reg=self.implicit_factor_regularization,
            implicit_init_scale=self.implicit_factor_init_scale, track_mean=False)

    @property
    def adaptive(self) -> bool:
        """Explicit mode with the adaptive learner (the worker keeps the `a` field)."""
        return self.mode == "explicit" and self.learner == "adaptive"

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
    stall_timeout_s: float = Field(
        120.0, gt=0, description="/healthz fails when the loop has not come round this long")
    reconnect_backoff_max_s: float = Field(30.0, gt=0)
    redis_retry_budget_s: float = Field(
        240.0, gt=0, le=3000, description="give up (exit) after Redis is away this long; the "
        "consumer's max.poll.interval.ms is set 60 s above it")
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
    holdout_min_events: int = Field(
        5000, ge=0, le=10_000_000, description="the holdout is at least this many events in all "
        "(each partition its share), never more than half the log; a 2,000-event holdout "
        "promoted candidates that then hurt (benchmarks/RESULTS.md, issue 13 rebase)")
    gate_margin: float = Field(
        0.0, ge=0, description="relative worsening allowed: 0 = the candidate must not be "
        "worse than the serving model on the same holdout")
    keep_last: int = Field(5, ge=1)
    keep_promoted_days: float = Field(30, ge=0)
    chunk_rows: int = Field(1_000_000, ge=1000)
    lock_ttl_s: float = Field(
        60.0, gt=0, description="the retrain's lock lease (renewed while it runs); a killed "
        "retrain blocks the next one at most this long")
    backend: Literal["auto", "als_wr", "implicit", "spark"] = Field(
        "auto", description="the fit engine: auto = the mode's own (als_wr for explicit, implicit "
        "for implicit, as before); spark = pyspark.ml ALS (extra `spark`; docs/retrain.md)")
    spark_master: str = Field("local[2]", min_length=1, description="Spark master URL")
    spark_conf: str = Field(
        "", description="extra Spark conf passed through, 'key=value,key=value' (e.g. "
        "spark.executor.memory=8g)")
    spark_staging_dir: str = Field(
        "", description="where the ratings are staged as Parquet for Spark ('' = a local temp "
        "dir; must be reachable by the executors when the master is not local)")

    @field_validator("spark_conf")
    @classmethod
    def _spark_conf_pairs(cls, value: str) -> str:
        for pair in filter(None, (p.strip() for p in value.split(","))):
            if "=" not in pair or not pair.split("=", 1)[0].strip():
                raise ValueError(f"expected key=value pairs separated by commas, got {pair!r}")
        return value

    def spark_conf_dict(self) -> dict[str, str]:
        """``spark_conf`` as a dict."""
        pairs = (p.split("=", 1) for p in self.spark_conf.split(",") if p.strip())
        return {k.strip(): v.strip() for k, v in pairs}


class ArchiveSettings(_Section):
    """The archiver (`online-als archive`): Kafka -> the Cassandra ratings log, and stream
    snapshots of the serving version materialised from that log."""

    group_suffix: str = Field("-archive", min_length=1,
                              description="its consumer group is kafka.group_id + this")
    batch_max_events: int = Field(20000, ge=1, le=50000)
    batch_max_wait_ms: int = Field(200, ge=1)
    snapshot_interval_s: float = Field(
        60.0, ge=0, description="materialise and store a stream snapshot this often (0 = never)")
    snapshot_min_events: int = Field(1, ge=1, description="skip a snapshot with fewer new events")


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
    archive: ArchiveSettings = ArchiveSettings()
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


_SECRET_HINTS = ("pass", "secret", "token", "credential", "auth")


def _section_fields(section: str) -> dict[str, Any]:
    field = Settings.model_fields.get(section)
    model = field.annotation if field is not None else None
    return dict(getattr(model, "model_fields", {}))


def _shown_input(loc: tuple[Any, ...], item: Any) -> str:
    """`` (got 'x')`` for a known, non-secret leaf setting; nothing otherwise, so a secret
    (or a mistyped secret key such as ``passwd``) is never echoed."""
    if len(loc) != 2 or item.get("type") == "extra_forbidden":
        return ""
    field = _section_fields(str(loc[0])).get(str(loc[1]))
    if field is None or "SecretStr" in str(field.annotation):
        return ""
    if any(h in str(loc[1]).lower() for h in _SECRET_HINTS):
        return ""
    text = repr(item.get("input"))
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def _explain(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc)
        env = ENV_PREFIX + ENV_NESTED.join(str(p).upper() for p in loc)
        msg = item["msg"].removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden" and len(loc) == 2:
            import difflib

            known = list(_section_fields(str(loc[0])))
            close = difflib.get_close_matches(str(loc[1]), known, n=1)
            hint = f"did you mean {loc[0]}.{close[0]}?" if close else f"known keys: {', '.join(known)}"
            lines.append(f"  {where}: unknown setting (value not shown); {hint}")
            continue
        if len(loc) < 2:  # a rule across settings: the message names them
            lines.append(f"  {msg}")
            continue
        lines.append(
            f"  {where}: {msg}{_shown_input(loc, item)}; fix it in the TOML file, "
            f"with {env}=..., or with --set {where}=..."
        )
    if len(lines) == 2:  # one problem: one line
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _secret_files(tree: dict[str, Any]) -> None:
    """Replace each ``<secret>_file`` setting by the file's content (see SECRET_FILE_SUFFIX)."""
    for section, values in tree.items():
        if not isinstance(values, dict):
            continue
        fields = _section_fields(section)
        for key in [k for k in values if str(k).endswith(SECRET_FILE_SUFFIX)]:
            base = str(key)[: -len(SECRET_FILE_SUFFIX)]
            if base not in fields or "SecretStr" not in str(fields[base].annotation):
                continue
            path = Path(str(values.pop(key)))
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"{section}.{key}: cannot read {path} ({exc.strerror}); mount "
                                  f"the secret there or fix the path") from None
            values[base] = text[:-1] if text.endswith("\n") else text


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
    _secret_files(tree)
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
