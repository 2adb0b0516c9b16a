"""Prometheus metrics of the retrain job (a batch job: it runs, exports, exits).

Two ways out, chosen by ``settings.metrics.pushgateway``:

- set (``"pushgateway:9091"`` or ``"http://host:9091"``): the job reads the group it pushed
  last time, carries its counters and streaks forward, and PUTs the whole registry to the
  Pushgateway when it finishes (success or failure). Prometheus scrapes the Pushgateway with
  ``honor_labels: true``.
- unset: the job serves ``/metrics`` on ``settings.metrics.host:port`` while it runs, so a
  scraper sees only long runs; counters carry over only between runs of one process
  (``online-als retrain --every``).

>>> from worker.config import load_config
>>> with retrain_run(load_config(environ={}), serve=False) as rm:   # doctest: +SKIP
...     with rm.phase("read"):
...         rm.add_rows(1_000_000)
...     with rm.phase("fit"):
...         pass
...     rm.set_holdout("rmse", 0.91, model="candidate")
...     rm.set_holdout("rmse", 0.93, model="serving")
...     rm.finish("promoted")
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from worker.config import Settings
from worker.metrics import PREFIX, MetricsServer, start_http_server

log = logging.getLogger("online_als.retrain.metrics")

RETRAIN_PREFIX: Final = PREFIX + "retrain_"
#: The job label under which the retrain pushes its group to the Pushgateway.
DEFAULT_JOB: Final = "online-als-retrain"

Outcome = Literal["promoted", "rejected", "skipped", "failed"]
#: promoted = published and switched to; rejected = the holdout gate kept the serving model;
#: skipped = too few new ratings, nothing fitted; failed = an exception (or no decision) ended
#: the run. Only promoted resets, and only rejected/failed extend, the unpromoted streak.
OUTCOMES: Final[tuple[str, ...]] = ("promoted", "rejected", "skipped", "failed")
#: The phases of ``worker.control.retrain_job.run_retrain``, pre-created at 0 so dashboards show each
#: from the first push; other names are allowed.
PHASES: Final[tuple[str, ...]] = (
    "read", "fit", "evaluate", "snapshot", "load", "catchup", "switch",
)

#: Every sample name the retrain job exports (no histograms; ``_created`` left out).
RETRAIN_METRIC_NAMES: Final[tuple[str, ...]] = (
    "online_als_retrain_phase_duration_seconds",
    "online_als_retrain_duration_seconds",
    "online_als_retrain_rows_read_total",
    "online_als_retrain_holdout_score",
    "online_als_retrain_runs_total",
    "online_als_retrain_consecutive_unpromoted_runs",
    "online_als_retrain_last_run_timestamp_seconds",
    "online_als_retrain_last_success_timestamp_seconds",
    "online_als_retrain_last_promoted_timestamp_seconds",
    "online_als_retrain_candidate_version",
    "online_als_retrain_running",
)


@dataclass(frozen=True)
class RetrainHistory:
    """What one run carries over from the previous ones (read back from the Pushgateway)."""

    runs: Mapping[str, float] = field(default_factory=dict)
    rows_read: float = 0.0
    consecutive_unpromoted: int = 0
    last_success: float | None = None
    last_promoted: float | None = None

    @classmethod
    def from_exposition(
        cls, text: str, job: str = DEFAULT_JOB, grouping_key: Mapping[str, str] | None = None
    ) -> RetrainHistory:
        """Pick this job's group out of a Pushgateway ``/metrics`` page."""
        want = {"job": job, **(grouping_key or {})}
        runs: dict[str, float] = {}
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if not s.name.startswith(RETRAIN_PREFIX):
                    continue
                if any(s.labels.get(k, "") != v for k, v in want.items()):
                    continue
                if s.name == RETRAIN_PREFIX + "runs_total" and "outcome" in s.labels:
                    runs[s.labels["outcome"]] = s.value
                else:
                    values[s.name] = s.value

        def ts(name: str) -> float | None:
            v = values.get(RETRAIN_PREFIX + name)
            return v if v is not None and math.isfinite(v) and v > 0 else None

        return cls(
            runs=runs,
            rows_read=values.get(RETRAIN_PREFIX + "rows_read_total", 0.0),
            consecutive_unpromoted=int(values.get(RETRAIN_PREFIX + "consecutive_unpromoted_runs", 0)),
            last_success=ts("last_success_timestamp_seconds"),
            last_promoted=ts("last_promoted_timestamp_seconds"),
        )


def gateway_url(address: str) -> str:
    """``host:port`` or a URL -> a base URL with a scheme and no trailing slash."""
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def fetch_history(
    gateway: str,
    job: str = DEFAULT_JOB,
    grouping_key: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> RetrainHistory:
    """The previous run's carried values; empty (with a warning) if the gateway cannot say."""
    url = gateway_url(gateway) + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        log.warning("could not read previous retrain metrics from %s (%s); counters restart", url, exc)
        return RetrainHistory()
    return RetrainHistory.from_exposition(text, job, grouping_key)


class RetrainMetrics:
    """The retrain job's metrics on their own registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        history: RetrainHistory | None = None,
        phases: tuple[str, ...] = PHASES,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.history = history or RetrainHistory()
        reg, p = self.registry, RETRAIN_PREFIX
        self.phase_duration = Gauge(
            p + "phase_duration_seconds",
            "Wall time of each phase in the last run (0 = not reached).",
            ["phase"],
            registry=reg,
        )
        self.duration = Gauge(p + "duration_seconds", "Wall time of the last run.", registry=reg)
        self.rows_read = Counter(
            p + "rows_read", "Ratings-log rows read by retrain runs.", registry=reg
        )
        self.holdout_score = Gauge(
            p + "holdout_score",
            "Holdout metric of the last run, for the candidate and the serving model.",
            ["metric", "model"],
            registry=reg,
        )
        self.runs = Counter(p + "runs", "Finished retrain runs by outcome.", ["outcome"], registry=reg)
        self.consecutive_unpromoted = Gauge(
            p + "consecutive_unpromoted_runs",
            "Runs in a row that failed or were rejected by the gate (0 after a promotion).",
            registry=reg,
        )
        self.last_run = Gauge(
            p + "last_run_timestamp_seconds", "Unix time the last run finished.", registry=reg
        )
        self.last_success = Gauge(
            p + "last_success_timestamp_seconds",
            "Unix time of the last run that finished without error (promoted or rejected).",
            registry=reg,
        )
        self.last_promoted = Gauge(
            p + "last_promoted_timestamp_seconds",
            "Unix time of the last run whose model was promoted.",
            registry=reg,
        )
        self.candidate_version = Gauge(
            p + "candidate_version", "Model version the last run produced (0 = none).", registry=reg
        )
        self.running = Gauge(p + "running", "1 while a retrain run is in progress.", registry=reg)

        h = self.history
        for phase in phases:
            self.phase_duration.labels(phase)
        for outcome in OUTCOMES:
            self.runs.labels(outcome).inc(max(0.0, h.runs.get(outcome, 0.0)))
        self.rows_read.inc(max(0.0, h.rows_read))
        self.consecutive_unpromoted.set(h.consecutive_unpromoted)
        # Carried forward so a failed run's push does not erase "when did it last work".
        self.last_success.set(h.last_success or 0)
        self.last_promoted.set(h.last_promoted or 0)
        self._started = time.monotonic()
        self._finished = False
        #: The HTTP endpoint while :meth:`serve` runs one.
        self.server: MetricsServer | None = None
        #: The recorded outcome (None while running). Assigning it directly instead of calling
        #: :meth:`finish` is honoured by :func:`retrain_run`, which then calls ``finish`` with it.
        self.outcome: str | None = None

    # -- during the run ------------------------------------------------------------------
    def start(self) -> None:
        self._started = time.monotonic()
        self.running.set(1)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase; the gauge is set even when the phase raises."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phase_duration.labels(name).set(time.perf_counter() - t0)

    def observe_phase(self, phase: str, seconds: float) -> None:
        """``observe(phase, seconds)`` callback for ``run_retrain``."""
        self.phase_duration.labels(phase).set(seconds)

    def add_rows(self, n: int) -> None:
        self.rows_read.inc(n)

    def set_holdout(self, metric: str, value: float, model: str = "candidate") -> None:
        """e.g. ``set_holdout("rmse", 0.91)``, ``set_holdout("rmse", 0.93, model="serving")``."""
        self.holdout_score.labels(metric, model).set(value)

    def set_candidate_version(self, version: int) -> None:
        self.candidate_version.set(version)

    def finish(self, outcome: str, now: float | None = None) -> None:
        """Record the run's outcome (once; a second call is ignored)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        if self._finished:
            return
        self._finished = True
        self.outcome = outcome
        now = time.time() if now is None else now
        self.runs.labels(outcome).inc()
        self.duration.set(time.monotonic() - self._started)
        self.last_run.set(now)
        self.running.set(0)
        if outcome == "promoted":
            self.consecutive_unpromoted.set(0)
            self.last_promoted.set(now)
        elif outcome in ("rejected", "failed"):
            self.consecutive_unpromoted.set(self.history.consecutive_unpromoted + 1)
        if outcome in ("promoted", "rejected"):
            self.last_success.set(now)

    @property
    def finished(self) -> bool:
        return self._finished

    def carried(self) -> RetrainHistory:
        """What the next run in this process should start from (no Pushgateway needed)."""

        def value(name: str) -> float:
            return float(self.registry.get_sample_value(RETRAIN_PREFIX + name) or 0.0)

        runs = {o: float(self.registry.get_sample_value(RETRAIN_PREFIX + "runs_total",
                                                        {"outcome": o}) or 0.0)
                for o in OUTCOMES}
        return RetrainHistory(
            runs=runs,
            rows_read=value("rows_read_total"),
            consecutive_unpromoted=int(value("consecutive_unpromoted_runs")),
            last_success=value("last_success_timestamp_seconds") or None,
            last_promoted=value("last_promoted_timestamp_seconds") or None,
        )

    # -- export --------------------------------------------------------------------------
    def push(
        self,
        gateway: str,
        job: str = DEFAULT_JOB,
        grouping_key: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """PUT the registry as the job's group (replacing the previous push)."""
        push_to_gateway(
            gateway_url(gateway), job=job, registry=self.registry,
            grouping_key=dict(grouping_key or {}), timeout=timeout_s,
        )

    def serve(self, host: str, port: int) -> MetricsServer:
        """``/metrics`` (and ``/healthz``, ``/readyz``, ready at once) while the job runs."""
        server = start_http_server(host, port, self.registry)
        server.ready = True
        self.server = server
        return server


# Without a Pushgateway, runs in one process (``online-als retrain --every``) carry over here.
_LOCAL_HISTORY: dict[tuple[str, tuple[tuple[str, str], ...]], RetrainHistory] = {}


@contextmanager
def retrain_run(
    settings: Settings,
    *,
    job: str = DEFAULT_JOB,
    grouping_key: Mapping[str, str] | None = None,
    serve: bool = True,
) -> Iterator[RetrainMetrics]:
    """Metrics for one retrain run, exported the configured way.

    An exception inside the block records ``failed`` and is re-raised; a block that ends
    without an outcome also records ``failed`` (no decision was made). An outcome assigned to
    ``rm.outcome`` instead of calling ``rm.finish`` is recorded as if finished with it.
    With a Pushgateway the group is pushed at the end either way; a failed push is logged,
    never raised (the model work is done by then). Without one, ``/metrics`` is served on
    ``settings.metrics.host:port`` for the duration when ``serve`` is true, and counters and
    streaks carry over only between runs of the same process.
    """
    gateway = settings.metrics.pushgateway
    key = dict(grouping_key) if grouping_key else {"prefix": settings.redis.key_prefix}
    local_key = (job, tuple(sorted(key.items())))
    if gateway:
        history = fetch_history(gateway, job, key)
    else:
        history = _LOCAL_HISTORY.get(local_key, RetrainHistory())
    rm = RetrainMetrics(history=history)
    server = None
    if not gateway and serve:
        server = rm.serve(settings.metrics.host, settings.metrics.port)
    rm.start()
    try:
        yield rm
    except BaseException:
        rm.finish("failed")
        raise
    finally:
        if not rm.finished:
            decided = rm.outcome
            if decided not in OUTCOMES:
                log.warning("retrain run ended without an outcome; recording it as failed")
                decided = "failed"
            rm.finish(decided)
        _LOCAL_HISTORY[local_key] = rm.carried()
        if gateway:
            try:
                rm.push(gateway, job, key)
            except OSError as exc:
                log.error("could not push retrain metrics to %s: %s", gateway, exc)
        if server is not None:
            server.close()
            rm.server = None
