"""The periodic full retrain: read the log -> fit -> gate -> snapshot -> load -> catch up -> switch.

The log is read only up to each partition's *contiguous* archived end (``archive_checkpoints``;
a hole below it is an error naming the partition and offsets, never a skip). Each partition's
log is split at an offset *boundary* (the last ``holdout_fraction`` of it, and at least its share
of ``holdout_min_events``, is the holdout). The
model is fitted on everything before the boundary; the new Redis version's checkpoints are the
boundary, and the events from there on (holdout included) are replayed through the same online
kernels from Kafka, never past the serving version's checkpoints, before the pointer switches.
So no online update is lost (Oryx #69), and a crash at any point leaves the current version
serving: only :mod:`worker.control.lifecycle` moves the pointer, by compare-and-set on the version
that served when the retrain started, and the next retrain fails what a killed one left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from online_als.evaluation import ranking_metrics_at_k, split_by_group
from online_als.evaluation.gate import Verdict
from online_als.idmap import IdMap
from online_als.ratings import Ratings, concat
from online_als.retrain import AlsWrParams, ImplicitParams, WarmStart
from online_als.retrain.matrix import build_matrix
from online_als.serving.coldstart import predict_explicit
from online_als.serving.topn import top_n_batch
from worker.config import Settings
from worker.control import lifecycle
from worker.control.materialize import ItemEventCounter
from worker.control.retrain_gate import decide, serving_reference
from worker.runtime.applier import BatchApplier, decode_messages
from worker.runtime.commit import CommitProtocol
from worker.stores import kafka as kafka_io
from worker.stores.redis.bulk_load import load_version
from worker.stores.redis.store import RedisStore, dump_vectors

log = logging.getLogger("online_als.retrain")
CRASH_ENV = "ONLINE_ALS_RETRAIN_CRASH_AFTER"  # test hook: os._exit(137) after this phase
MAX_EVAL_USERS = 5000


@dataclass
class RetrainReport:
    version: int | None = None
    outcome: str = "skipped"  # promoted | rejected | skipped | failed
    reason: str = ""  # why rejected, or (promoted) what the gate could not check and forced
    gate: Verdict | None = None  # what the quality gate found (None: it never ran)
    forced: bool = False  # promoted by --force-promote past a gate that refused it
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    boundary: dict[int, int] = field(default_factory=dict)
    train_ratings: int = 0
    holdout_ratings: int = 0
    replayed_events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["gate"] = self.gate.value if self.gate is not None else None
        return out


class _Phases:
    def __init__(self, report: RetrainReport, observe: Any = None) -> None:
        self.report, self.observe = report, observe
        self._t = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.seconds[phase] = round(now - self._t, 4)
        if self.observe is not None:
            self.observe(phase, now - self._t)
        self._t = now
        log.info("retrain phase %s: %.2fs", phase, self.report.seconds[phase])
        if os.environ.get(CRASH_ENV) == phase:
            os._exit(137)


def _boundaries(cutoff: dict[int, int], holdout_fraction: float,
                holdout_min_events: int = 0) -> dict[int, int]:
    """Per partition, the first offset held out (``gate.holdout_sizes``: the product's rule)."""
    from online_als.evaluation.gate import holdout_sizes

    sizes = holdout_sizes(cutoff, holdout_fraction, holdout_min_events)
    return {p: int(c - sizes[p]) for p, c in cutoff.items()}


def _split_log(cass: Any, topic: str, cutoff: dict[int, int], boundary: dict[int, int],
               chunk_rows: int, holdout: list[Ratings]) -> Iterator[Ratings]:
    """Train chunks for the matrix builder; holdout parts are kept aside (bounded fraction)."""
    bound_of = np.zeros(max(boundary, default=-1) + 1, dtype=np.int64)  # partition -> boundary
    bound_of[list(boundary)] = list(boundary.values())
    for chunk in cass.iter_contiguous_log(topic, cutoff, chunk_rows=chunk_rows):
        train = chunk.offsets < bound_of[chunk.partitions]  # only the cutoff's partitions
        if not train.all():
            holdout.append(chunk.take(~train))
        yield chunk.take(train) if not train.all() else chunk


def _evaluate(mode: str, result: Any, matrix: Any, holdout: list[Ratings],
              train_csr: Any, serving: Any = None, replay_params: Any = None) -> dict[str, float]:
    """The candidate's holdout metrics (``matrix``: the one it was fitted on, for its id maps);
    with ``serving`` (the :class:`~online_als.factors.ModelArrays` of the serving version at the holdout
    boundary) both models are scored on the same holdout by the same functions, the serving
    model's scores under ``serving_<metric>`` (what :func:`~worker.control.retrain_gate.decide`
    compares). Explicit mode
    with ``replay_params`` (the online learner's params) replays the holdout through the online
    kernel from each model, so both are scored as they would serve, online updates included."""
    if not holdout or matrix.users is None:
        return {}
    held = concat(holdout)
    users, items, values = held.user_ids, held.item_ids, held.values
    if serving is not None:
        return _score_both(mode, result, matrix, serving, held, train_csr, replay_params)
    u = matrix.users.rows_for(users, add=False)
    i = matrix.items.rows_for(items, add=False)
    if mode == "explicit":
        pred = np.clip(predict_explicit(u, i, result.users.vectors, result.users.biases,
                                        result.items.vectors, result.items.biases,
                                        result.global_mean), 0.5, 5.0)
        err = pred - values
        return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
    known = (u >= 0) & (i >= 0) & (values > 0)
    if not known.any():
        return {}
    ku, ki = u[known], i[known]
    eval_users = np.unique(ku)
    if len(eval_users) > MAX_EVAL_USERS:  # a seeded sample bounds the cost of the gate
        eval_users = np.sort(np.random.default_rng(0).choice(eval_users, MAX_EVAL_USERS,
                                                             replace=False))
    keep = np.isin(ku, eval_users)
    relevant = split_by_group(np.searchsorted(eval_users, ku[keep]), ki[keep], len(eval_users))
    rows, _ = top_n_batch(result.users.vectors[eval_users], result.items.vectors, 10,
                          exclude=train_csr[eval_users])
    m = ranking_metrics_at_k(rows, relevant, k=10)
    return {"ndcg_at_10": float(m["ndcg"]), "recall_at_10": float(m["recall"])}


def _score_both(mode: str, result: Any, matrix: Any, serving: Any, holdout: Ratings,
                train_csr: Any, replay_params: Any) -> dict[str, float]:
    """Candidate and serving model on the same holdout (online_als.evaluation.gate), each as
    it would serve: the serving version with its learner state, the candidate with fresh state
    (a promoted retrain starts so), both replayed at the events' own times (the adaptive
    learner reads them through ``event_seconds``, the worker's clock)."""
    from online_als.evaluation.gate import compare_on_holdout

    cand = result.model  # fresh adaptive state (aux None), as a promoted retrain starts
    kw: dict[str, Any] = {}
    if mode == "explicit":
        kw["params"] = replay_params
    else:  # same sampled users for both; seen = their training items (candidate's id space)
        pos = holdout.values > 0
        eu = np.unique(holdout.user_ids[pos].astype(str))
        if len(eu) > MAX_EVAL_USERS:
            eu = np.sort(np.random.default_rng(0).choice(eu, MAX_EVAL_USERS, replace=False))
        rows = matrix.users.rows_for(eu, add=False)
        sub = train_csr[np.maximum(rows, 0)].tocoo()
        keep = rows[sub.row] >= 0
        item_ids = np.asarray(matrix.items.to_list(), dtype=object)
        kw.update(eval_users=eu, seen_users=eu[sub.row[keep]],
                  seen_items=item_ids[sub.col[keep]].astype(str))
    res = compare_on_holdout(mode, serving, cand, holdout, **kw)
    out = {k: v for k, v in res.candidate.items() if k not in ("n", "n_users")}
    out.update({f"serving_{k}": v for k, v in res.serving.items() if k not in ("n", "n_users")})
    return out


def _warm_start(store: RedisStore, version: int, rank: int) -> WarmStart:
    return WarmStart(dump_vectors(store, version, "u", rank),
                     dump_vectors(store, version, "i", rank))


def catch_up(settings: Settings, store: RedisStore, applier: BatchApplier, version: int,
             source_version: int | None, max_seconds: float = 600.0) -> int:
    """Replay Kafka from ``version``'s checkpoints up to where ``source_version`` is, never
    past it (the serving version's checkpoints are re-read as they move)."""
    from confluent_kafka import TopicPartition

    from worker.runtime.applier import decode_config

    topic = settings.kafka.topic
    consumer = kafka_io.make_consumer(settings.kafka, **{"group.id": f"{settings.kafka.group_id}-retrain-{version}"})
    state = applier.load_version(version)
    cfg = decode_config(settings)
    parts = kafka_io.topic_partitions(consumer, topic)
    replayed = 0
    deadline = time.monotonic() + max_seconds
    commit = CommitProtocol(store, applier, topic, owner=f"retrain-{version}")
    try:
        starts = commit.assign(version, parts)  # fenced: a stale catch-up cannot write later
        pos = {p: (starts[p] or 0) for p in parts}
        consumer.assign([TopicPartition(topic, p, pos[p]) for p in parts])
        while time.monotonic() < deadline:
            target = _targets(store, source_version, topic, parts, consumer)
            if all(pos[p] >= target.get(p, 0) for p in parts):
                return replayed
            msgs = kafka_io.consume_batch(consumer, settings.worker.batch_max_events, 0.2,
                                          lambda e: log.warning("kafka: %s", e))
            past: set[int] = set()
            keep = []
            for msg in msgs:
                p, off = msg.partition(), msg.offset()
                if off < pos[p]:  # type: ignore[index,operator]
                    continue
                if off >= target.get(p, 0):  # type: ignore[arg-type,operator]
                    past.add(p)  # type: ignore[arg-type]
                    continue
                keep.append(msg)
            msgs = keep
            if not msgs:
                for p in past:  # read again once the target has moved
                    consumer.seek(TopicPartition(topic, p, pos[p]))
                continue
            if store.read_meta(version) is None:
                raise RuntimeError(f"Redis lost the namespace of version {version} during catch-up")
            selection = commit.select(msgs)
            if selection is None:
                continue
            # rejects were dead-lettered by the workers already
            decoded = decode_messages(selection.messages, cfg)
            commit.commit(state, decoded, selection)
            replayed += len(decoded.batch) if decoded.batch is not None else 0
            pos.update(commit.positions)
            for p in past:
                consumer.seek(TopicPartition(topic, p, pos[p]))
        raise TimeoutError(f"catch-up did not reach the serving version within {max_seconds}s")
    finally:
        consumer.close()


def _targets(store: RedisStore, source_version: int | None, topic: str, parts: list[int],
             consumer: Any) -> dict[int, int]:
    if source_version is None:
        return kafka_io.high_watermarks(consumer, topic, parts)
    cps = store.read_checkpoints(source_version, topic, parts)
    return {p: (cp.offset or 0) for p, cp in cps.items()}


def run_retrain(settings: Settings, cass: Any, store: RedisStore, *, warm: bool | None = None,
                force: bool = False, force_promote: bool = False,
                observe: Any = None) -> RetrainReport:
    """One retrain; see the module docstring. ``force``: retrain however few new ratings;
    ``force_promote``: promote even a candidate the gate refuses (the report and the version's
    recorded reason say so). ``observe(phase, seconds)`` feeds metrics."""
    with lifecycle.retrain_lock(store, settings.retrain.lock_ttl_s):
        abandoned = lifecycle.abandon_unfinished(store, cass)
        if abandoned:
            log.warning("failed versions a killed retrain left behind: %s", abandoned)
        return _run_locked(settings, cass, store, warm, force, force_promote, observe)


def _run_locked(settings: Settings, cass: Any, store: RedisStore, warm: bool | None,
                force: bool, force_promote: bool, observe: Any) -> RetrainReport:
    r, m, topic = settings.retrain, settings.model, settings.kafka.topic
    report = RetrainReport()
    phases = _Phases(report, observe)
    current = store.current_version()
    cur_meta = cass.get_version(current) if current is not None else None
    cutoff = cass.contiguous_offsets(topic)
    new_ratings = sum(cutoff.values()) - sum((cur_meta.cutoff if cur_meta else {}).values())
    if not cutoff or (not force and new_ratings < r.min_new_ratings):
        report.reason = f"only {new_ratings} new ratings (< {r.min_new_ratings})"
        return report
    # The number first, above every version Cassandra knows: a counter Redis handed back in
    # time must not surface as a VersionConflict after the whole fit.
    version = lifecycle.allocate_version(store, cass)
    boundary = _boundaries(cutoff, r.holdout_fraction, r.holdout_min_events)
    report.boundary = boundary
    holdout: list[Ratings] = []
    dup: Literal["sum", "last"] = "last" if m.mode == "explicit" else "sum"
    users, items = IdMap(), IdMap()
    counter = ItemEventCounter(items)
    matrix = build_matrix(counter.chunks(_split_log(cass, topic, cutoff, boundary, r.chunk_rows,
                                                    holdout)), dup, users=users, items=items)
    report.train_ratings = int(matrix.events)
    report.holdout_ratings = int(sum(len(h) for h in holdout))
    phases.done("read")
    use_warm = r.warm_start if warm is None else warm
    iterations = r.warm_start_iterations if use_warm else r.iterations
    params: AlsWrParams | ImplicitParams
    if m.mode == "explicit":
        params = AlsWrParams(factors=m.rank, reg=r.explicit_reg, reg_bias=r.explicit_reg_bias,
                             iterations=iterations, seed=m.seed)
    else:
        params = ImplicitParams(factors=m.rank, reg=m.implicit_regularization, alpha=m.alpha,
                                iterations=iterations, seed=m.seed)
    start = _warm_start(store, current, m.rank) if use_warm and current is not None else None
    from worker.control.retrain_backend import fit_model  # retrain.backend: which engine fits

    result = fit_model(settings, matrix, params, start)
    phases.done("fit")
    csr = matrix.matrix.tocsr()
    ref = serving_reference(settings, cass, store, current, cur_meta, boundary)
    report.metrics = _evaluate(m.mode, result, matrix, holdout, csr, ref.arrays, ref.params)
    report.baseline = dict(ref.stored)
    decision = decide(m.mode, report.metrics, ref, r.gate_margin)
    report.gate = decision.verdict
    rejected = decision.reason
    if rejected and force_promote:  # the operator's explicit call; recorded as such
        report.forced, rejected = True, ""
        report.reason = f"forced past the gate, which would have rejected it: {decision.detail}"
        log.warning("retrain: --force-promote overrides the quality gate: %s", decision.detail)
    elif decision.verdict is not Verdict.PASSED:
        report.reason = decision.detail  # a promotion without a same-holdout check says so
    phases.done("evaluate")
    from worker.stores.cassandra.store import ModelVersion

    report.version = version
    user_ids, item_ids = result.users.id_list(), result.items.id_list()
    cass.create_version(ModelVersion(
        version=version, status="building", mode=m.mode, rank=m.rank, topic=topic,
        params={**result.params, "global_mean": float(result.global_mean), "warm": bool(use_warm)},
        cutoff=boundary, counts={"users": len(user_ids), "items": len(item_ids),
                                 "train_ratings": report.train_ratings,
                                 "holdout_ratings": report.holdout_ratings},
        metrics=report.metrics, notes="retrain"))
    try:
        cass.write_factors(version, "u", result.users)
        cass.write_factors(version, "i", result.items)
        phases.done("snapshot")
        if rejected:
            cass.set_version_status(version, "rejected", rejected, expected_status="building")
            report.outcome, report.reason = "rejected", rejected
            log.warning("retrain version %d rejected by the quality gate: %s", version, rejected)
            return report
        cass.set_version_status(version, "ready", report.reason, expected_status="building")
        model = result.model
        # `n` = events per item (not distinct users), the same meaning the workers keep
        counts = np.zeros(len(item_ids), np.int64)
        assert matrix.items is not None  # built from ids
        rows = matrix.items.rows_for(items.to_list(), add=False)
        known = rows >= 0
        counts[rows[known]] = counter.counts[: len(rows)][known]
        load_version(store, version, model, item_counts=counts, checkpoints=boundary,
                     topic=topic, implicit_reg=m.foldin_regularization, source="retrain",
                     seen=(csr.indptr, csr.indices, csr.data))
        phases.done("load")
        applier = BatchApplier(store, m, topic)
        report.replayed_events = catch_up(settings, store, applier, version, current)
        phases.done("catchup")
        lifecycle.promote(settings, cass, store, version, current, note=report.reason)
        phases.done("switch")
        report.outcome = "promoted"
        return report
    except Exception as exc:
        report.outcome, report.reason = "failed", repr(exc)
        with contextlib.suppress(Exception):  # the current version keeps serving either way
            lifecycle.fail(store, cass, version, repr(exc))
        raise
