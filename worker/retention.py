"""Snapshot retention: keep the last K versions and every promoted one younger than D days."""

from __future__ import annotations

import time
from typing import Any

from worker.bulk_load import delete_namespace
from worker.config import Settings
from worker.redis_store import RedisStore


def versions_to_delete(versions: list[Any], current: int | None, keep_last: int,
                       keep_promoted_days: float, now: float | None = None) -> list[int]:
    """Version numbers retention removes (never the serving one)."""
    now = time.time() if now is None else now
    ordered = sorted(versions, key=lambda v: v.version)
    recent = {v.version for v in ordered[-keep_last:]}
    out = []
    for v in ordered:
        young_promoted = v.status == "promoted" and now - v.created_at < keep_promoted_days * 86400
        if v.version == current or v.version in recent or young_promoted:
            continue
        out.append(v.version)
    return out


def apply_retention(settings: Settings, cass: Any, store: RedisStore) -> list[int]:
    r = settings.retrain
    doomed = versions_to_delete(cass.list_versions(), store.current_version(), r.keep_last,
                                r.keep_promoted_days)
    for version in doomed:
        delete_namespace(store, version)
        cass.delete_version(version)
    return doomed
