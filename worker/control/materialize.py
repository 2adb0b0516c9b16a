"""A version's streaming state, rebuilt from Cassandra alone: a snapshot plus the log after it.

The workers keep Redis; Cassandra keeps the inputs (the ratings log, complete by construction,
see :mod:`worker.control.archive`) and, now and then, a *stream snapshot* of each serving version.
Any later state of the version is the newest snapshot (or the version's base: a retrain's fit,
or nothing for a bootstrap version) with the log replayed from the snapshot's offsets through
the same kernels, in (partition, offset) order. With one partition that is exactly the order a
worker applies, so the result is bit-identical to Redis at the same offsets (explicit mode);
with several partitions the interleaving differs and vectors agree within the tolerance stated
in ``docs/exactly-once.md``.

>>> mat = materialize(cass, settings, version=3)          # doctest: +SKIP
>>> mat.offsets, mat.model.state.n_users                   # doctest: +SKIP
({0: 300000}, 20000)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from online_als.adaptive import AdaptiveModel, event_seconds
from online_als.factors import Factors, ModelArrays
from online_als.idmap import IdMap
from online_als.model import ModelState
from online_als.online import ExplicitParams, OnlineImplicitParams, OnlineModel
from online_als.ratings import Ratings
from online_als.retrain.matrix import build_matrix
from worker.config import Settings

log = logging.getLogger("online_als.materialize")


@dataclass
class Materialized:
    """One version's vectors as of the log offsets ``offsets`` (next offset per partition)."""

    version: int
    offsets: dict[int, int]
    model: OnlineModel | AdaptiveModel
    replayed: int = 0

    def arrays(self) -> ModelArrays:
        """A copy of the version's arrays, with the adaptive learner's per-entity state (the
        Redis field `a`) as each side's ``aux`` (None for the other learners)."""
        s = self.model.state
        ua = ia = None
        if isinstance(self.model, AdaptiveModel):
            ua, ia = self.model.user_aux.copy(), self.model.item_aux.copy()
        return ModelArrays(
            s.mode, Factors(s.users.to_list(), s.user_factors.copy(), s.user_bias.copy(), ua),
            Factors(s.items.to_list(), s.item_factors.copy(), s.item_bias.copy(), ia),
            float(s.global_mean))


def online_model(settings: Settings, mode: str, rank: int, global_mean: float,
                 arrays: ModelArrays | None = None) -> OnlineModel | AdaptiveModel:
    """The in-memory learner a worker's applier is equivalent to (same kernels, init, params).

    Explicit mode with ``model.learner = "adaptive"``: an :class:`AdaptiveModel` with the
    worker's init and params, starting from each side's ``aux`` where it has one (without,
    every row is initialised as the worker initialises a key without `a`)."""
    m = settings.model
    u_scale, i_scale = m.init_scales()
    params: ExplicitParams | OnlineImplicitParams
    if mode == "explicit" and m.learner == "adaptive":
        state = _state(mode, rank, m.seed, u_scale, i_scale, global_mean, arrays)
        aux = (None, None) if arrays is None else (arrays.users.aux, arrays.items.aux)
        return AdaptiveModel.from_state(state, m.adaptive_params(), *aux)
    if mode == "explicit":
        params = ExplicitParams(m.learning_rate, m.regularization, m.bias_regularization,
                                m.gradient_clip, track_mean=False)
    else:
        params = OnlineImplicitParams(m.foldin_regularization, m.alpha, m.update_items)
    return OnlineModel(_state(mode, rank, m.seed, u_scale, i_scale, global_mean, arrays), params)


def _state(mode: str, rank: int, seed: int, u_scale: float, i_scale: float, global_mean: float,
           arrays: ModelArrays | None) -> ModelState:
    kwargs: dict[str, Any] = {"seed": seed, "user_init_scale": u_scale,
                              "item_init_scale": i_scale, "global_mean": float(global_mean)}
    if arrays is None:
        return ModelState(mode, rank, **kwargs)  # type: ignore[arg-type]
    return arrays.state(**kwargs)


def load_base(cass: Any, settings: Settings, version: int,
              not_after: dict[int, int] | None = None) -> Materialized:
    """The newest committed stream snapshot of ``version`` (with ``not_after``: the newest
    whose offsets are all at or before it), else its base snapshot."""
    from worker.stores.cassandra.store import FactorsNotFound

    meta = cass.get_version(version)
    if meta is None:
        raise LookupError(f"Cassandra has no model version {version}")
    global_mean = float(meta.params.get("global_mean", settings.model.global_mean))
    snaps = cass.archive.snapshots(version)
    if not_after is not None:
        snaps = [sn for sn in snaps
                 if all(o <= not_after.get(p, 0) for p, o in sn.offsets.items())]
        if any(o > not_after.get(p, 0) for p, o in meta.cutoff.items()):
            raise LookupError(f"version {version} starts after {not_after}")
    if snaps:  # aux state: only stream snapshots carry it (a retrain's base has none)
        snap = snaps[0]
        users = cass.archive.read_snapshot(snap, "u")
        items = cass.archive.read_snapshot(snap, "i")
        offsets = dict(snap.offsets)
    else:
        try:
            users = cass.read_factors(version, "u")
            items = cass.read_factors(version, "i")
        except FactorsNotFound:  # a bootstrap version that never got its empty base
            users = items = Factors([], np.zeros((0, meta.rank), np.float32),
                                    np.zeros(0, np.float32))
        offsets = {int(p): int(o) for p, o in meta.cutoff.items()}
    arrays = ModelArrays(meta.mode, users, items, global_mean)
    return Materialized(version, offsets, online_model(settings, meta.mode, meta.rank,
                                                       global_mean, arrays))


def replay_chunks(mat: Materialized, chunks: Iterator[Ratings]) -> Iterator[Ratings]:
    """Pass log chunks through, learning the events at or after ``mat.offsets``."""
    for chunk in chunks:
        users, items, values, ts = chunk.user_ids, chunk.item_ids, chunk.values, chunk.timestamps
        parts, offsets = chunk.partitions, chunk.offsets
        assert parts is not None and offsets is not None  # log chunks carry both
        start = np.array([mat.offsets.get(int(p), 0) for p in range(int(parts.max()) + 1)]
                         if len(parts) else [0], dtype=np.int64)
        new = offsets >= start[parts]
        if new.any():
            if isinstance(mat.model, AdaptiveModel):  # the worker's clock: event_seconds
                mat.model.learn_batch(users[new], items[new], values[new],
                                      event_seconds(ts[new]))
            else:
                mat.model.learn_batch(users[new], items[new], values[new])
            mat.replayed += int(new.sum())
        yield chunk


def advance(cass: Any, settings: Settings, mat: Materialized, upto: dict[int, int]) -> int:
    """Replay the log from ``mat.offsets`` to ``upto`` (checked for holes); returns events."""
    before = mat.replayed
    starts = {p: min(mat.offsets.get(p, 0), c) for p, c in upto.items()}
    begin = _archive_starts(cass, settings, starts)
    chunks = cass.iter_contiguous_log(settings.kafka.topic, upto, begin, settings.retrain.chunk_rows)
    for _ in replay_chunks(mat, chunks):
        pass
    mat.offsets = {**mat.offsets, **upto}
    return mat.replayed - before


def _archive_starts(cass: Any, settings: Settings, starts: dict[int, int]) -> dict[int, int]:
    ranges = cass.archive_ranges(settings.kafka.topic)
    return {p: max(s, ranges[p].start if p in ranges else 0) for p, s in starts.items()}


def materialize_at(cass: Any, settings: Settings, version: int,
                   upto: dict[int, int]) -> Materialized:
    """``version`` exactly as of ``upto`` (e.g. a retrain's holdout boundary), from the newest
    snapshot at or before it; raises LookupError when the version starts after ``upto``."""
    mat = load_base(cass, settings, version, not_after=upto)
    advance(cass, settings, mat, upto)
    return mat


def materialize(cass: Any, settings: Settings, version: int,
                upto: dict[int, int] | None = None) -> Materialized:
    """``version`` as of ``upto`` (default: the end of the contiguous archived log)."""
    mat = load_base(cass, settings, version)
    target = cass.contiguous_offsets(settings.kafka.topic) if upto is None else upto
    target = {p: max(o, mat.offsets.get(p, 0)) for p, o in target.items()}
    advance(cass, settings, mat, target)
    return mat


@dataclass(frozen=True)
class History:
    """What a version's Redis namespace holds besides vectors, rebuilt from the log."""

    seen: sp.csr_matrix  # users x items, rows/cols in the model's id order
    item_events: np.ndarray  # int64 per item: events in the log (the `n` field)
    events: int


class ItemEventCounter:
    """Counts events per item over log chunks (the meaning of `n` everywhere)."""

    def __init__(self, items: IdMap) -> None:
        self.items = items
        self.counts: np.ndarray = np.zeros(len(items), dtype=np.int64)

    def chunks(self, chunks: Iterator[Ratings]) -> Iterator[Ratings]:
        for chunk in chunks:
            rows = self.items.rows_for(chunk.item_ids, add=True)
            if len(self.items) > len(self.counts):
                self.counts = np.concatenate(
                    [self.counts, np.zeros(len(self.items) - len(self.counts), np.int64)])
            self.counts += np.bincount(rows, minlength=len(self.counts))
            yield chunk


def rebuild(cass: Any, settings: Settings, mat: Materialized, upto: dict[int, int]) -> History:
    """Replay ``mat`` to ``upto`` and, in the same pass over the whole log, rebuild the
    seen-history and per-item event counts of its ids."""
    s = mat.model.state
    starts = _archive_starts(cass, settings, {p: 0 for p in upto})
    chunks = cass.iter_contiguous_log(settings.kafka.topic, upto, starts,
                                      settings.retrain.chunk_rows)
    dup: Literal["sum", "last"] = "last" if s.mode == "explicit" else "sum"
    users, items = IdMap.from_list(s.users.to_list()), IdMap.from_list(s.items.to_list())
    counter = ItemEventCounter(items)
    hist = build_matrix(counter.chunks(replay_chunks(mat, chunks)), dup, users=users, items=items,
                        keep_zeros=True)  # the worker's seen-hashes keep a net weight of 0
    mat.offsets = {**mat.offsets, **upto}
    # map the builder's rows and columns (first seen in the log) to the model's order
    n_users, n_items = s.n_users, s.n_items
    to_u = s.users.rows_for(users.to_list(), add=False)
    to_i = s.items.rows_for(items.to_list(), add=False)
    coo = hist.matrix.tocoo()
    keep = (to_u[coo.row] >= 0) & (to_i[coo.col] >= 0)
    seen = sp.csr_matrix((coo.data[keep], (to_u[coo.row[keep]], to_i[coo.col[keep]])),
                         shape=(n_users, n_items), dtype=np.float32)
    seen.sort_indices()
    counts = np.zeros(n_items, np.int64)
    known = to_i[: len(counter.counts)] >= 0
    counts[to_i[: len(counter.counts)][known]] = counter.counts[known]
    return History(seen, counts, int(hist.events))
