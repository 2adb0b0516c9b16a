"""The version lifecycle: the only code that creates, loads, promotes, rolls back, restores,
fails and retires model versions.

It alone moves ``<P>:current`` (a compare-and-set on the version the caller expects, so a
finishing retrain can never silently switch away from a rollback made meanwhile), writes
version meta and the Cassandra status, and appends to both switch logs.

States (Cassandra ``model_versions.status``): ``building`` -> ``ready`` -> ``promoted`` ->
``rolled_back`` (and back); ``rejected`` by the quality gate; ``failed`` when a retrain died
or lost the race (its Redis namespace is removed). In Redis only ``retrain.keep_last``
versions stay resident; older ones live in Cassandra and come back through :func:`rollback`.

One lock discipline: every change to which namespaces exist and which one serves (a load from
Cassandra by restore or rollback, every switch, promotion included, retention, the cleanup of
abandoned versions) happens under the lifecycle lock (:func:`load_lock`, a lease in Redis), and
retention never touches a version a retrain is still building (``building``/``ready``). So a
prune can never delete a namespace a rollback is loading or a promotion is switching to, and
Redis and the Cassandra switch log record switches in the same order
(``tests/test_lifecycle_races.py``, with the pause points of :mod:`worker.control.hooks`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from worker.config import Settings
from worker.control.hooks import pause
from worker.control.leases import LOCK_WAIT_S

# Re-exported: callers take the leases from the lifecycle, as before they had a module.
from worker.control.leases import LeaseHeld as LeaseHeld
from worker.control.leases import lifecycle_locked as lifecycle_locked
from worker.control.leases import load_lock as load_lock
from worker.control.leases import retrain_lock as retrain_lock

# Retention lives in worker.control.retention; re-exported: callers take it from here.
from worker.control.retention import UNFINISHED
from worker.control.retention import apply_retention as apply_retention
from worker.control.retention import resident_versions as resident_versions
from worker.control.retention import versions_to_delete as versions_to_delete
from worker.stores.redis.bulk_load import delete_namespace, load_version
from worker.stores.redis.keys import FORMAT_VERSION
from worker.stores.redis.store import RedisStore

log = logging.getLogger("online_als.lifecycle")


class SwitchRefused(RuntimeError):
    """The serving version is not the one the caller expected (someone switched meanwhile)."""


def serving_version(cass: Any) -> int | None:
    """The version that serves according to Cassandra: the newest switch, else the newest
    promoted version."""
    switches = cass.list_switches(limit=1)
    if switches:
        return int(switches[0].version)
    latest = cass.latest_version(("promoted",))
    return int(latest.version) if latest else None


# -- generation: how workers notice that Redis lost its state ----------------------------
def new_generation(store: RedisStore) -> str:
    token = uuid.uuid4().hex
    store.client.set(store.keys.generation(), token)
    return token


def ensure_generation(store: RedisStore) -> str:
    store.client.set(store.keys.generation(), uuid.uuid4().hex, nx=True)
    token = store.generation()
    assert token is not None
    return token


# -- switching -------------------------------------------------------------------------
def switch(store: RedisStore, cass: Any, expected: int | None, version: int, reason: str,
           actor: str) -> None:
    """Move ``current`` from ``expected`` to ``version`` or raise :class:`SwitchRefused`."""
    if not store.compare_and_switch(expected, version, reason, actor):
        raise SwitchRefused(
            f"serving version is {store.current_version()}, not {expected}: someone switched "
            f"meanwhile, so version {version} was not switched in ({reason})")
    if cass is not None:
        cass.record_switch(version, reason, actor)
    log.info("serving version %s -> %d (%s)", expected, version, reason)


def allocate_version(store: RedisStore, cass: Any) -> int:
    """A new version number that Cassandra does not know: the Redis counter, raised first to
    the highest version in ``model_versions``. Redis restarted from an old RDB or a promoted
    replica can hand the counter back in time; without the floor the next retrain would find
    its number taken (``VersionConflict``) only after its whole fit."""
    floor = 0
    if cass is not None:  # the table is small: retention keeps a handful of versions
        floor = max((v.version for v in cass.list_versions()), default=0)
    return store.allocate_version(floor)


def bootstrap(settings: Settings, store: RedisStore, cass: Any = None) -> int:
    """The serving version, creating an empty online-only one when there is none."""
    current = store.current_version()
    if current is not None:
        return current
    version = allocate_version(store, cass)
    m = settings.model
    delete_namespace(store, version)  # keys a writer left after a wipe must not leak in
    store.write_meta(version, {"mode": m.mode, "rank": m.rank, "global_mean": m.global_mean,
                               "source": "bootstrap", "format": FORMAT_VERSION,
                               "status": "online", "created_at": time.time()})
    if cass is not None:
        import numpy as np

        from online_als.factors import Factors
        from worker.stores.cassandra.store import ModelVersion

        empty = Factors([], np.zeros((0, m.rank), dtype=np.float32), np.zeros(0, np.float32))
        cass.write_factors(version, "u", empty)
        cass.write_factors(version, "i", empty)
        cass.create_version(ModelVersion(
            version=version, status="promoted", mode=m.mode, rank=m.rank,
            topic=settings.kafka.topic, params={"global_mean": m.global_mean},
            notes="bootstrap: online updates only"))
    try:
        switch(store, cass, None, version, "bootstrap", settings.worker.name)
    except SwitchRefused:  # another worker bootstrapped first: serve its version
        delete_namespace(store, version)
        if cass is not None:
            with contextlib.suppress(Exception):
                cass.delete_version(version)
        return int(store.current_version())  # type: ignore[arg-type]
    new_generation(store)
    return version


# -- loading from Cassandra ------------------------------------------------------------
@dataclass(frozen=True)
class LoadReport:
    version: int
    users: int
    items: int
    log_events: int
    replayed: int
    checkpoints: dict[int, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_from_cassandra(settings: Settings, cass: Any, store: RedisStore, version: int,
                        source: str) -> LoadReport:
    """Write ``version`` into its Redis namespace as of the end of the contiguous log: its
    newest snapshot plus the log replayed after it, seen-hashes and item counts from the
    whole log, checkpoints at the log's end (workers continue from Kafka there)."""
    from worker.control.materialize import load_base, rebuild

    t0 = time.perf_counter()
    mat = load_base(cass, settings, version)
    upto = {p: max(o, mat.offsets.get(p, 0))
            for p, o in cass.contiguous_offsets(settings.kafka.topic).items()}
    hist = rebuild(cass, settings, mat, upto)
    arrays = mat.arrays()
    load_version(store, version, arrays, item_counts=hist.item_events, checkpoints=upto,
                 topic=settings.kafka.topic, implicit_reg=settings.model.foldin_regularization,
                 source=source, seen=(hist.seen.indptr, hist.seen.indices, hist.seen.data))
    return LoadReport(version, len(arrays.users), len(arrays.items), hist.events,
                      mat.replayed, upto, time.perf_counter() - t0)


def restore(settings: Settings, cass: Any, store: RedisStore, force: bool = False,
            keyspace_created: bool | None = None) -> LoadReport:
    """Rebuild the serving version in Redis from Cassandra and point at it (the caller holds
    :func:`load_lock`). With nothing to restore, the LookupError says what Cassandra holds
    and what to do (``keyspace_created``: the caller's migrate just created the keyspace)."""
    current = store.current_version()
    if current is not None and not force:
        raise RuntimeError("Redis already holds a current model version; use --force to replace")
    version = serving_version(cass)
    if version is None:
        from worker.control.restore_report import nothing_to_restore

        raise LookupError(nothing_to_restore(settings, cass, keyspace_created))
    report = load_from_cassandra(settings, cass, store, version, "restore")
    store.write_meta(version, {"status": "serving"})
    switch(store, None, current, version, "restore from Cassandra", "online-als restore")
    new_generation(store)
    log.info("restored version %d: %d users, %d items, %d log events (%d replayed) in %.1fs",
             version, report.users, report.items, report.log_events, report.replayed,
             report.seconds)
    return report


# -- retrain: promotion, failure (the retrain and load leases: worker.control.leases) --
def fail(store: RedisStore, cass: Any, version: int, reason: str) -> None:
    """Mark ``version`` failed (if it never served) and remove its Redis namespace."""
    if store.current_version() == version:
        raise RuntimeError(f"version {version} is serving; it cannot be failed")
    meta = cass.get_version(version) if cass is not None else None
    if meta is not None and meta.status in UNFINISHED:
        try:
            cass.set_version_status(version, "failed", reason[:500])
        except Exception:  # it moved meanwhile: whoever moved it owns it now
            log.exception("could not mark version %d failed", version)
    delete_namespace(store, version)
    log.warning("version %d failed: %s", version, reason)


def abandon_unfinished(store: RedisStore, cass: Any) -> list[int]:
    """Fail the versions a dead retrain left behind (call with the retrain lock held; it
    takes the lifecycle lock, so a bootstrap or load in progress is never taken for litter)."""
    with lifecycle_locked(store, "cleaning up abandoned versions"):
        return _abandon_locked(store, cass)


def _abandon_locked(store: RedisStore, cass: Any) -> list[int]:
    current = store.current_version()
    out = []
    for meta in cass.list_versions():
        if meta.status in UNFINISHED and meta.version != current:
            fail(store, cass, meta.version, "abandoned: the retrain that built it died")
            out.append(meta.version)
    for version in resident_versions(store):
        if version != current and cass.get_version(version) is None:
            delete_namespace(store, version)  # a namespace Cassandra never heard of
            out.append(version)
    return sorted(set(out))


def promote(settings: Settings, cass: Any, store: RedisStore, version: int,
            expected: int | None, reason: str = "retrain promoted", note: str = "") -> None:
    """Switch serving from ``expected`` to the loaded, caught-up ``version``; ``note`` is
    recorded as the version's status reason (e.g. that the gate was overridden). Under the
    lifecycle lock: a rollback in progress finishes first, and then this switch refuses."""
    pause("promote.before_lock")
    with lifecycle_locked(store, f"promoting version {version}"):
        store.write_meta(version, {"status": "serving"})
        try:
            switch(store, cass, expected, version, reason, "online-als retrain")
        except SwitchRefused as exc:
            fail(store, cass, version, str(exc))
            raise
        cass.set_version_status(version, "promoted", note, expected_status="ready")


# -- rollback --------------------------------------------------------------------------
def rollback(settings: Settings, cass: Any, store: RedisStore, version: int,
             reason: str) -> dict[str, Any]:
    """Serve ``version`` again; load it from Cassandra first when Redis does not hold it.
    Everything from the check of the version to the status bookkeeping is under the
    lifecycle lock, so retention cannot delete it meanwhile nor a promotion interleave."""
    t0 = time.perf_counter()
    _rollback_target(cass, version)  # fail fast, before waiting for the lock
    with load_lock(store, wait_s=LOCK_WAIT_S) as held:
        if not held:
            raise RuntimeError("another process has been loading a version for 10 minutes; "
                               "retry the rollback when it is done")
        meta = _rollback_target(cass, version)  # again: retention may have run meanwhile
        resident = store.read_meta(version)
        loaded = False
        if resident is None or resident.status not in ("ready", "serving", "online"):
            load_from_cassandra(settings, cass, store, version, "rollback")
            loaded = True
        pause("rollback.loaded")
        previous = store.current_version()
        if previous != version:
            switch(store, cass, previous, version, reason, "online-als rollback")
        if store.generation() is None:  # Redis had lost its state: this is the new one
            new_generation(store)
        seconds = time.perf_counter() - t0
        if previous is not None and previous != version:
            try:
                prev = cass.get_version(previous)
                if prev is not None and prev.status == "promoted":
                    cass.set_version_status(previous, "rolled_back", reason)
                if meta.status != "promoted":
                    cass.set_version_status(version, "promoted", reason)
            except Exception:  # the switch happened; status bookkeeping must not undo it
                log.exception("could not record the statuses of versions %s -> %s", previous,
                              version)
    return {"to": version, "from": previous, "loaded_from_cassandra": loaded,
            "seconds": round(seconds, 4)}


def _rollback_target(cass: Any, version: int) -> Any:
    meta = cass.get_version(version)
    if meta is None:
        raise LookupError(f"no model version {version} in Cassandra")
    if meta.status not in ("promoted", "rolled_back", "rejected"):
        raise LookupError(f"version {version} is {meta.status!r}; only versions that served or "
                          "were rejected by the gate can be rolled back to")
    return meta


def ensure_serving(settings: Settings, store: RedisStore, stop: threading.Event) -> int | None:
    """The serving version; when Redis has none, restore it from Cassandra (one process does
    it under the load lock while the others wait) or, without Cassandra, bootstrap one.
    None if ``stop`` was set first."""
    while store.current_version() is None and not stop.is_set():
        with load_lock(store) as mine:
            if mine and store.current_version() is None:
                _restore_or_bootstrap(settings, store, stop)
            elif not mine:
                log.info("another process is restoring the Redis key space; waiting")
                stop.wait(0.5)
    return store.current_version()


def _restore_or_bootstrap(settings: Settings, store: RedisStore, stop: threading.Event) -> None:
    if not settings.cassandra.enabled:
        bootstrap(settings, store)
        return
    from worker.stores.cassandra.store import CassandraStore

    delay = 1.0
    while not stop.is_set():
        try:
            with CassandraStore(settings.cassandra) as cass:
                cass.migrate()
                if serving_version(cass) is None:
                    bootstrap(settings, store, cass)
                    return
                report = restore(settings, cass, store)
                log.warning("Redis had no model: restored version %d from Cassandra at %s",
                            report.version, report.checkpoints)
                return
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # never bootstrap over persisted state we cannot read yet
            log.warning("cassandra %s:%d: cannot restore the lost Redis state yet (%s); "
                        "retry in %.0fs", ",".join(settings.cassandra.hosts),
                        settings.cassandra.port, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, settings.worker.reconnect_backoff_max_s)
