"""Retention: which version namespaces stay resident in Redis and which versions Cassandra keeps.

It runs under the lifecycle lock (:func:`worker.control.leases.lifecycle_locked`), like every
load and switch, so what it reads as serving is what serves while it deletes, and a rollback
or restore loading a version is never pruned under it. A version a retrain is still building
(``building``/``ready`` in ``model_versions``) is never touched: the retrain loads and catches
up its namespace under its own lease, and fails and removes it itself if it dies
(``lifecycle.abandon_unfinished``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from worker.config import Settings
from worker.control.leases import LOCK_WAIT_S, lifecycle_locked
from worker.stores.redis.bulk_load import delete_namespace
from worker.stores.redis.store import RedisStore

UNFINISHED = ("building", "ready")  # a retrain is building these (or died doing so)


def resident_versions(store: RedisStore) -> list[int]:
    """Versions with a namespace (meta) in Redis."""
    pattern = re.compile(rf"^{re.escape(store.keys.prefix)}:v(\d+):meta$")
    out = set()
    for key in store.client.scan_iter(match=f"{store.keys.prefix}:v*:meta", count=1000):
        m = pattern.match(key.decode() if isinstance(key, bytes) else key)
        if m:
            out.add(int(m.group(1)))
    return sorted(out)


def versions_to_delete(versions: list[Any], current: int | None, keep_last: int,
                       keep_promoted_days: float, now: float | None = None) -> list[int]:
    """Versions retention removes from Cassandra: all but the last ``keep_last``, the
    serving one, promoted ones younger than ``keep_promoted_days`` and unfinished ones."""
    now = time.time() if now is None else now
    ordered = sorted(versions, key=lambda v: v.version)
    recent = {v.version for v in ordered[-keep_last:]}
    out = []
    for v in ordered:
        young_promoted = (v.status in ("promoted", "rolled_back")
                          and now - v.created_at < keep_promoted_days * 86400)
        if (v.version == current or v.version in recent or young_promoted
                or v.status in UNFINISHED):
            continue
        out.append(v.version)
    return out


def apply_retention(settings: Settings, cass: Any, store: RedisStore,
                    wait_s: float = LOCK_WAIT_S) -> dict[str, list[int]]:
    """Redis keeps the newest ``keep_last`` namespaces (always the serving one); Cassandra
    keeps those plus promoted versions younger than ``keep_promoted_days``; neither loses a
    version a retrain is building. Waits up to ``wait_s`` for the lifecycle lock (raises
    :class:`~worker.control.leases.LeaseHeld` naming its holder after that)."""
    r = settings.retrain
    with lifecycle_locked(store, "retention", wait_s):
        current = store.current_version()
        versions = cass.list_versions()
        building = {v.version for v in versions if v.status in UNFINISHED}
        resident = [v for v in resident_versions(store) if v not in building]
        keep = set(sorted(v for v in resident if v != current)[-(r.keep_last - 1):]
                   if r.keep_last > 1 else []) | {current}
        evicted = [v for v in resident if v not in keep]
        for version in evicted:
            delete_namespace(store, version)
        doomed = versions_to_delete(versions, current, r.keep_last, r.keep_promoted_days)
        for version in doomed:
            delete_namespace(store, version)
            cass.delete_version(version)
    return {"evicted_from_redis": evicted, "deleted": doomed}
