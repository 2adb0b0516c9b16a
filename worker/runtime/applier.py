"""Compute one micro-batch of decoded events against the factors of one Redis version.

:meth:`BatchApplier.prepare` reads the touched vectors (one script call per kind) and runs one
numba kernel call over batch-local arrays; :meth:`BatchApplier.queue_writes` queues the
idempotent writes. The order of intent, writes and checkpoints belongs to
:class:`worker.runtime.commit.CommitProtocol`, which the worker loop and the retrain catch-up share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_als.adaptive import event_seconds, fill_fresh_aux
from online_als.events import ImplicitEventMap, confidence_preference_from_weights
from online_als.init import ITEM_SALT, USER_SALT, init_vectors
from online_als.kernels.explicit_adaptive import (
    adaptive_update_batch,
    item_aux_width,
    user_aux_width,
)
from online_als.kernels.explicit_sgd import sgd_update_batch
from online_als.kernels.implicit_foldin import foldin_update_batch, gram_inverse
from online_als.ratings import Ratings
from worker.config import ModelSettings, Settings
from worker.events import DecodeConfig
from worker.runtime import before_state
from worker.runtime.owned_users import OwnedUsers
from worker.stores.redis.batch_args import PartitionTags, SeenUpdates
from worker.stores.redis.keys import FIELD_AUX
from worker.stores.redis.store import RedisStore, VectorBlock, VersionMeta

log = logging.getLogger("online_als.applier")


@dataclass
class DecodedMessages:
    """Kafka messages after decoding: the valid events, the rejects, and the batch's ends."""

    batch: Ratings | None  # valid events with partitions and offsets, in (partition, offset)
    # order; None if none
    rejects: list[Any]  # (position in the message list, reason, detail)
    ends: dict[int, int]  # last offset per partition, rejected messages included


def decode_config(settings: Settings) -> DecodeConfig:
    """The decoder's view of the settings: mode, rating range, event weights, id limit."""

    m = settings.model
    weights = dict(ImplicitEventMap.from_string(m.event_weights).weights)
    return DecodeConfig(mode=m.mode, rating_min=m.rating_min, rating_max=m.rating_max,
                        event_weights=weights, max_id_bytes=settings.worker.max_id_bytes)


def decode_messages(msgs: list[Any], config: Any) -> DecodedMessages:
    """Decode a list of confluent-kafka messages in one batched call."""
    from worker.events import decode_batch

    n = len(msgs)
    kafka_ts = np.fromiter((m.timestamp()[1] for m in msgs), dtype=np.float64, count=n)
    part_arr = np.fromiter((m.partition() for m in msgs), dtype=np.int32, count=n)
    off_arr = np.fromiter((m.offset() for m in msgs), dtype=np.int64, count=n)
    decoded = decode_batch([m.value() for m in msgs], kafka_ts, config)
    ends = _partition_ends(part_arr, off_arr)
    batch = None
    if len(decoded):
        r, idx = decoded.ratings, decoded.index
        batch = Ratings.trusted(r.user_ids, r.item_ids, r.values, r.timestamps, None,
                                part_arr[idx], off_arr[idx]).sort_by_offset()
    return DecodedMessages(batch, list(decoded.rejects), ends)


@dataclass
class VersionState:
    meta: VersionMeta
    gy_inv: np.ndarray | None = None
    gx_inv: np.ndarray | None = None

    @property
    def version(self) -> int:
        return self.meta.version


@dataclass
class ApplyResult:
    predictions: np.ndarray
    applied: np.ndarray
    new_users: int
    new_items: int
    timings: dict[str, float] = field(default_factory=dict)


class BatchApplier:
    def __init__(self, store: RedisStore, model: ModelSettings, topic: str) -> None:
        self.store = store
        self.model = model
        self.topic = topic
        self.adaptive = model.adaptive_params() if model.adaptive else None
        self._hp = self.adaptive.packed() if self.adaptive is not None else None

    def aux_widths(self, rank: int) -> tuple[int, int] | None:
        """Floats of `a` per user and per item with the adaptive learner, else None."""
        if self.adaptive is None:
            return None
        imp = self.adaptive.implicit
        return user_aux_width(rank, imp), item_aux_width(rank, imp)

    def load_version(self, version: int) -> VersionState:
        meta = self.store.read_meta(version)
        if meta is None:
            raise RuntimeError(f"Redis has no metadata for model version {version}")
        state = VersionState(meta)
        if meta.mode == "implicit":
            grams = self.store.read_grams(version, meta.rank)
            if grams is None:
                eye = gram_inverse(np.zeros((0, meta.rank), dtype=np.float32),
                                   self.model.foldin_regularization)
                grams = (eye, eye)
            state.gy_inv, state.gx_inv = grams
        return state

    def prepare(self, state: VersionState, batch: Ratings, ends: dict[int, int],
                batch_id: str, recovery: bool = False,
                owned: OwnedUsers | None = None) -> PreparedBatch:
        """Read the touched vectors and run the kernel; nothing is written yet.

        ``batch`` is sorted by (partition, offset); ``ends`` are its last offsets per partition,
        rejected messages included. With ``recovery`` the keys that batch ``batch_id`` already
        wrote are read from their before-images, so the result is what the first attempt
        computed."""
        t0 = time.perf_counter()
        meta, k, m = state.meta, state.meta.rank, self.model
        parts = batch.partitions
        assert parts is not None  # decode_messages gives every event its partition and offset
        users, u_rows = np.unique(batch.user_ids, return_inverse=True)
        items, i_rows = np.unique(batch.item_ids, return_inverse=True)
        user_list, item_list = users.tolist(), items.tolist()
        ukeys = self.store.vector_keys(meta.version, "u", user_list)
        ikeys = self.store.vector_keys(meta.version, "i", item_list)
        widths = self.aux_widths(k) if meta.mode == "explicit" else None
        legacy, written_by = (batch_id, ends) if recovery else ("", None)
        ub = self._read_users(ukeys, user_list, k, legacy, widths[0] if widths else 0,
                              None if recovery else owned, written_by)
        ib = self.store.read_vectors(ikeys, k, legacy, {FIELD_AUX: widths[1]} if widths else None,
                                     written_by)
        if recovery:  # keys the batch already wrote: back to its before-state, from its intent
            self._restore_before(meta.version, ends, batch_id,
                                 {"u": (user_list, ub), "i": (item_list, ib)})
        t1 = time.perf_counter()
        new_u, new_i = np.flatnonzero(~ub.present), np.flatnonzero(~ib.present)
        u_scale, i_scale = m.init_scales()
        if len(new_u):
            ub.factors[new_u] = init_vectors([user_list[j] for j in new_u], k, m.seed, u_scale,
                                             salt=USER_SALT)
        if len(new_i):
            ib.factors[new_i] = init_vectors([item_list[j] for j in new_i], k, m.seed, i_scale,
                                             salt=ITEM_SALT)
        aux_u = aux_i = None
        if widths:  # new keys and keys loaded without `a` (a retrain's, a restore's) start fresh
            assert self.adaptive is not None
            aux_u, aux_i = ub.extra[FIELD_AUX], ib.extra[FIELD_AUX]
            fill_fresh_aux(aux_u, user_list, "u", k, m.seed, self.adaptive)
            fill_fresh_aux(aux_i, item_list, "i", k, m.seed, self.adaptive)
        # expected = the state the batch starts from, fresh state included, so that a key
        # another worker created meanwhile is merged by delta like any other (write_vectors.lua)
        exp_uf, exp_ub = ub.factors.copy(), ub.biases.copy()
        exp_if, exp_ib = ib.factors.copy(), ib.biases.copy()
        exp_ua = aux_u.copy() if aux_u is not None else None
        exp_ia = aux_i.copy() if aux_i is not None else None
        u_rows = u_rows.astype(np.int64)
        i_rows = i_rows.astype(np.int64)
        n = len(batch)
        pred = np.zeros(n, dtype=np.float32)
        applied = np.zeros(n, dtype=np.uint8)
        if aux_u is not None and aux_i is not None:
            # same call as online_als.adaptive.AdaptiveModel.learn_batch (float64 mean)
            adaptive_update_batch(ub.factors, ub.biases, aux_u, ib.factors, ib.biases, aux_i,
                                  u_rows, i_rows, batch.values.astype(np.float32),
                                  event_seconds(batch.timestamps), float(meta.global_mean),
                                  self._hp, pred, applied)
        elif meta.mode == "explicit":
            sgd_update_batch(ub.factors, ub.biases, ib.factors, ib.biases, u_rows, i_rows,
                             batch.values.astype(np.float32), np.float32(meta.global_mean),
                             m.learning_rate, m.regularization, m.bias_regularization,
                             m.gradient_clip, pred, applied)
        else:
            conf, pref = confidence_preference_from_weights(batch.values, m.alpha)
            assert state.gy_inv is not None and state.gx_inv is not None
            foldin_update_batch(ub.factors, ib.factors, u_rows, i_rows, conf, pref,
                                state.gy_inv, state.gx_inv, m.update_items, pred, applied)
        t2 = time.perf_counter()
        ok = applied.astype(bool)
        seen = SeenUpdates(
            [self.store.keys.seen(meta.version, u) for u in user_list],
            u_rows[ok], batch.item_ids[ok], batch.values[ok],
            "set" if meta.mode == "explicit" else "incr",
        )
        counts = np.bincount(i_rows[ok], minlength=len(item_list)).astype(np.int64)
        utags = PartitionTags.of(u_rows, parts, len(user_list))
        itags = PartitionTags.of(i_rows, parts, len(item_list))
        before = before_state.encode(ends, {"u": (user_list, utags, exp_uf, exp_ub, exp_ua),
                                            "i": (item_list, itags, exp_if, exp_ib, exp_ia)})
        spec = ",".join(f"{p}={e}" for p, e in sorted(ends.items()))
        writes = [
            VectorWrites(ukeys, exp_uf, ub.factors, exp_ub, ub.biases, utags,
                         None, seen, _aux(exp_ua, aux_u)),
            VectorWrites(ikeys, exp_if, ib.factors, exp_ib, ib.biases, itags,
                         counts, None, _aux(exp_ia, aux_i)),
        ]
        # keys a crashed attempt created may have missed its SADD: index them again (idempotent)
        index = {
            "u": [user_list[j] for j in np.flatnonzero(~ub.present | ub.from_before_image)],
            "i": [item_list[j] for j in np.flatnonzero(~ib.present | ib.from_before_image)],
        }
        result = ApplyResult(pred, applied, len(new_u), len(new_i),
                             {"read": t1 - t0, "kernel": t2 - t1})
        return PreparedBatch(meta.version, spec, batch_id, writes, index, result, user_list,
                             before)

    def _restore_before(self, version: int, ends: dict[int, int], batch_id: str,
                        sides: dict[str, tuple[list[str], VectorBlock]]) -> None:
        """Put the rows a crashed attempt of this batch wrote back to the before-state its
        intents carry, so the recovery computes what the first attempt computed."""
        if not any(b.written is not None and b.written.any() for _, b in sides.values()):
            return
        blobs = self.store.read_pending_before(version, self.topic, sorted(ends), batch_id)
        before = before_state.decode(list(blobs.values()))
        for kind, (ids, block) in sides.items():
            assert block.written is not None
            idx = np.flatnonzero(block.written)
            if not len(idx):
                continue
            rows = before[kind].rows([ids[j] for j in idx.tolist()])
            if (rows < 0).any():  # an intent without its before-state: a format 1 writer's
                log.warning("recovery: %d %s rows written by the batch have no before-state in "
                            "its intent; they are recomputed from their current values",
                            int((rows < 0).sum()), kind)
            hit, r = idx[rows >= 0], rows[rows >= 0]
            src = before[kind]
            block.factors[hit], block.biases[hit] = src.factors[r], src.biases[r]
            if src.aux is not None and FIELD_AUX in block.extra:
                block.extra[FIELD_AUX][hit] = src.aux[r]
            block.from_before_image[hit] = True  # index them again, as format 1 did

    def _read_users(self, keys: list[str], users: list[str], rank: int, recovery: str,
                    aux_width: int, owned: OwnedUsers | None,
                    written_by: dict[int, int] | None) -> VectorBlock:
        """The users' rows: those ``owned`` holds from memory, the rest from Redis."""
        extra = {FIELD_AUX: aux_width} if aux_width else None
        if owned is None or not len(owned):
            return self.store.read_vectors(keys, rank, recovery, extra, written_by)
        rows = owned.rows(users)
        held = rows >= 0
        if not held.any():
            return self.store.read_vectors(keys, rank, recovery, extra, written_by)
        missing = np.flatnonzero(~held)
        got = self.store.read_vectors([keys[j] for j in missing], rank, recovery, extra)
        n = len(users)
        block = VectorBlock(np.empty((n, rank), np.float32), np.empty(n, np.float32),
                            np.ones(n, bool), np.zeros(n, bool),
                            {FIELD_AUX: np.empty((n, aux_width), np.float32)} if aux_width else {})
        hit = rows[held]
        block.factors[held], block.biases[held] = owned.factors[hit], owned.biases[hit]
        block.factors[missing], block.biases[missing] = got.factors, got.biases
        block.present[missing], block.from_before_image[missing] = got.present, got.from_before_image
        if aux_width:
            block.extra[FIELD_AUX][held] = owned.aux[hit]
            block.extra[FIELD_AUX][missing] = got.extra[FIELD_AUX]
        return block

    def queue_writes(self, prepared: PreparedBatch, pipe: Any) -> None:
        """Queue the batch's idempotent vector, seen and index writes on ``pipe``."""
        for w in prepared.writes:
            self.store.write_vectors(w.keys, prepared.spec, w.expected_f, w.new_f, w.expected_b,
                                     w.new_b, w.tags, counts=w.counts, seen=w.seen, pipe=pipe,
                                     batch_id=prepared.batch_id, extra=w.extra)
        for kind, ids in prepared.index.items():
            self.store.add_to_index(prepared.version, kind, ids, pipe)


@dataclass
class VectorWrites:
    keys: list[str]
    expected_f: np.ndarray
    new_f: np.ndarray
    expected_b: np.ndarray
    new_b: np.ndarray
    tags: PartitionTags  # per key, the partitions whose events touched it
    counts: np.ndarray | None
    seen: SeenUpdates | None
    extra: list[tuple[str, np.ndarray, np.ndarray]] | None = None  # (field, expected, new)


def _aux(expected: np.ndarray | None, new: np.ndarray | None
         ) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    return None if expected is None or new is None else [(FIELD_AUX, expected, new)]


@dataclass
class PreparedBatch:
    """A computed batch waiting for the commit protocol's writes."""

    version: int
    spec: str  # "p=last,..." over every partition of the batch
    batch_id: str
    writes: list[VectorWrites]
    index: dict[str, list[str]]
    result: ApplyResult
    user_ids: list[str]  # the rows of writes[0], in order
    before: dict[int, bytes]  # per partition, the before-state its intent carries

    def keep_users(self, owned: OwnedUsers) -> None:
        """Hand the committed user rows to ``owned`` (called once the commit is confirmed)."""
        w = self.writes[0]
        aux = w.extra[0][2] if w.extra else None
        owned.keep(self.user_ids, w.new_f, w.new_b, aux)


def _partition_ends(partitions: np.ndarray, offsets: np.ndarray) -> dict[int, int]:
    if len(partitions) == 0:
        return {}
    parts, inverse = np.unique(partitions, return_inverse=True)
    last = np.full(len(parts), -1, dtype=np.int64)
    np.maximum.at(last, inverse, offsets)
    return {int(p): int(e) for p, e in zip(parts.tolist(), last.tolist(), strict=True)}
