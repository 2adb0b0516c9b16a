"""Settings of the model, the worker, the retrain, the archiver and metrics, and the
:class:`Settings` object that holds every section."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from online_als import defaults as _D
from online_als.events import DEFAULT_WEIGHTS
from worker.config.base import _redact, _Section
from worker.config.servers import CassandraSettings, KafkaSettings, RedisSettings

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
    event_weights: str = ",".join(f"{k}={w:g}" for k, w in DEFAULT_WEIGHTS.items())
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
    owned_users_max: int = Field(
        200_000, ge=0, description="users of its partitions a worker holds in memory (what it "
        "last committed for them) instead of reading them back from Redis every batch; 0 reads "
        "every batch. (2k + 4) * 4 bytes per user with the adaptive learner: 528 at k=64, so "
        "the default holds about 106 MB")
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
    allow_late_start: bool = Field(
        False, description="archive a partition that has no checkpoint although Kafka's log of it "
        "no longer starts at offset 0 (retention dropped its oldest events): the Cassandra log "
        "then starts at Kafka's first offset. false = refuse that partition, with an ERROR line "
        "and online_als_archive_log_gaps_total (alert OnlineAlsArchiveLogGap)")


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    pushgateway: str | None = None


class ServeSettings(_Section):
    """``online-als serve``: the HTTP API over the serving client (docs/serving.md#http-api)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256, description="processes behind the one port")
    refresh_s: float = Field(1.0, gt=0, description="check <P>:current and the attribute "
                             "serial this often (a version switch is served within it)")
    reload_items_s: float = Field(60.0, gt=0, description="reload the serving version's "
                                  "items this often (the workers update them in place)")
    max_n: int = Field(1000, ge=1, le=100_000, description="largest n a request may ask for")
    max_ids: int = Field(10_000, ge=1, description="most ids in one include/exclude/items list")


class Settings(_Section):
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    cassandra: CassandraSettings = CassandraSettings()
    model: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    retrain: RetrainSettings = RetrainSettings()
    archive: ArchiveSettings = ArchiveSettings()
    metrics: MetricsSettings = MetricsSettings()
    serve: ServeSettings = ServeSettings()

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret masked (safe to log)."""
        return _redact(self.model_dump())
