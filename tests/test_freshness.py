"""The freshness metric (issue 25 item 5): per applied event, the time it became visible in
Redis minus its event time, as ``online_als_freshness_seconds`` on the worker's registry; the
dashboard panel and the alert on its p99 (promtool tests: deploy/prometheus/alerts_test.yml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce
from worker.freshness import BulkHistogram
from worker.metrics import FRESHNESS_BUCKETS, WorkerMetrics
from worker.runtime.loop import Worker
from worker.stores.redis.store import RedisStore

ROOT = Path(__file__).resolve().parents[1]


def buckets(m: WorkerMetrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line.startswith("online_als_freshness_seconds"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_bulk_histogram_matches_prometheus_histogram() -> None:
    from prometheus_client import Histogram

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.exponential(0.5, 5000), FRESHNESS_BUCKETS, [np.nan, np.inf]])
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "x", FRESHNESS_BUCKETS, registry=reg_a)
    ref = Histogram("x_seconds", "x", buckets=FRESHNESS_BUCKETS, registry=reg_b)
    assert bulk.observe_many(values) == values.size - 2  # NaN and inf dropped
    for v in values[np.isfinite(values)]:
        ref.observe(v)

    def samples(reg: CollectorRegistry) -> dict[str, float]:
        return {s.name + str(sorted(s.labels.items())): s.value for fam in reg.collect()
                for s in fam.samples if not s.name.endswith("_created")}

    a, b = samples(reg_a), samples(reg_b)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k]), k


@pytest.mark.stack
def test_worker_observes_event_time_to_visible(stack: StackInfo, isolated: Isolated) -> None:
    settings = make_settings(stack, isolated, **{"model.rank": 4})
    now = time.time()
    fresh = [{"user_id": f"u{j % 7}", "item_id": f"i{j % 11}", "rating": 4.0, "ts": now - 2.0}
             for j in range(300)]
    old = [{"user_id": "u1", "item_id": "i1", "rating": 3.0, "ts": 1_700_000_000 + j}
           for j in range(20)]
    produce(settings, fresh + old)
    metrics = WorkerMetrics()
    worker = Worker(settings, metrics)
    worker.run(idle_exit_s=3)
    assert worker.applied_total == 320
    b = buckets(metrics)
    seen_at = time.time()
    assert b["online_als_freshness_seconds_count"] == 320
    # the fresh events: at least their 2 s of age, at most the age when the test ended
    assert b['online_als_freshness_seconds_bucket{le="1.0"}'] == 0
    top = max(float(x) for x in FRESHNESS_BUCKETS if x <= 3600)
    assert b[f'online_als_freshness_seconds_bucket{{le="{top}"}}'] == 300  # old ones above
    mean_fresh = (b["online_als_freshness_seconds_sum"] - 20 * (now - 1_700_000_000)) / 300
    assert 2.0 <= mean_fresh <= seen_at - now + 2.0 + 20 * 20 / 300 + 1
    version = RedisStore.from_settings(settings.redis).current_version()
    assert version is not None


def test_dashboard_panel_and_alert_use_the_metric() -> None:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/online-als.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] if p.get("targets") for t in p["targets"]]
    assert any("histogram_quantile(0.99" in e and "online_als_freshness_seconds_bucket" in e
               for e in exprs)
    rules = {r["alert"]: r for g in yaml.safe_load(
        (ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"] for r in g["rules"]}
    expr = rules["OnlineAlsFreshnessSloBreached"]["expr"]
    assert "histogram_quantile(0.99" in expr and "online_als_freshness_seconds_bucket" in expr
    tests = (ROOT / "deploy/prometheus/alerts_test.yml").read_text()
    assert "alertname: OnlineAlsFreshnessSloBreached" in tests
    readme = (ROOT / "README.md").read_text()
    assert "online_als_freshness_seconds" in readme and "Freshness SLO" in readme
