"""What the serving client keeps per model version and returns: the item matrix and its
indexes (:class:`VersionCache`), a user as read (:class:`UserRecord`), the fold-in settings
(:class:`FoldInParams`) and a result list that knows its version (:class:`Recommendations`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from online_als.events import DEFAULT_WEIGHTS, ImplicitEventMap
from online_als.factors import Factors
from online_als.ratings import object_ids
from online_als.serving import (
    SimilarityIndex,
    gram,
    predict_explicit,
)
from online_als.serving.prefilter import QuantizedItems
from online_als.serving.topn import Allow
from worker.config import ModelSettings

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: ``filter=`` of the recommend calls: a predicate on one item id, or the set of allowed ids.
ItemFilter: TypeAlias = Callable[[str], bool] | AbstractSet[str] | None

_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ALLOW = np.empty(0, dtype=np.bool_)


class _Rows(dict[bytes, int]):
    """Item id bytes -> row; -1 for an id the version does not know. ``map(rows.__getitem__,
    ids)`` then runs in C for every hit (``dict.get`` with a default needs a Python frame)."""

    def __missing__(self, key: bytes) -> int:
        return -1


class NoModelError(LookupError):
    """``<P>:current`` does not exist: no model version has been created under the prefix."""


class Recommendations(list[tuple[str, float]]):
    """``(item_id, score)`` pairs, best first, plus the version and how they were made.

    ``source`` is ``"model"`` (factor scores), ``"popular"`` (cold-start fallback: score = the
    item's event count) or ``"unknown"`` (nothing to compare with, e.g. an unknown user in
    :meth:`ServingClient.similar_users`).

    >>> r = Recommendations([("i1", 2.5)], version=3, source="model")
    >>> r == [("i1", 2.5)], r.version, r.source
    (True, 3, 'model')
    """

    def __init__(self, pairs: Iterable[tuple[str, float]] = (), *, version: int,
                 source: str) -> None:
        super().__init__(pairs)
        self.version = version
        self.source = source

    @property
    def item_ids(self) -> list[str]:
        return [i for i, _ in self]


@dataclass(frozen=True)
class FoldInParams:
    """Hyper-parameters the serving maths needs that Redis meta does not hold (yet).

    ``implicit_reg`` is λ of ``G = YᵀY + λI`` (meta stores only the inverse), ``alpha`` the
    implicit confidence scale, ``reg``/``reg_bias`` the explicit fold-in ridge penalties,
    ``event_weights`` map implicit event names to weights. A version's meta fields
    ``implicit_regularization``, ``alpha``, ``regularization`` and ``bias_regularization``,
    when present, win over these (see :meth:`with_meta`).

    >>> FoldInParams().with_meta({"alpha": "2.5"}).alpha
    2.5
    """

    implicit_reg: float = 0.05
    alpha: float = 1.0
    reg: float = 0.05
    reg_bias: float = 0.05
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @classmethod
    def from_model(cls, m: ModelSettings) -> FoldInParams:
        return cls(implicit_reg=m.implicit_regularization, alpha=m.alpha, reg=m.regularization,
                   reg_bias=m.bias_regularization,
                   event_weights=dict(ImplicitEventMap.from_string(m.event_weights).weights))

    def with_meta(self, extra: Mapping[str, str]) -> FoldInParams:
        def pick(name: str, default: float) -> float:
            try:
                return float(extra[name]) if name in extra else default
            except ValueError:
                return default

        return FoldInParams(
            implicit_reg=pick("implicit_regularization", self.implicit_reg),
            alpha=pick("alpha", self.alpha),
            reg=pick("regularization", self.reg),
            reg_bias=pick("bias_regularization", self.reg_bias),
            event_weights=self.event_weights,
        )

    def value_of(self, value: float | str) -> float:
        """A number, or an implicit event name (``"like"``) mapped to its weight."""
        if isinstance(value, str):
            if value in self.event_weights:
                return float(self.event_weights[value])
            return float(value)  # "4.5" -> 4.5; anything else raises ValueError
        return float(value)


@dataclass(frozen=True)
class UserRecord:
    """One user as read in one round trip: vector (None if unknown), bias, seen history.

    ``seen_raw`` is the seen hash as Redis returned it; exclusion maps its byte keys to rows
    directly (decoding ~100 ids per request would cost more than scoring them).
    """

    vector: F32 | None
    bias: float
    seen_raw: Mapping[bytes, bytes] = field(default_factory=dict)

    @cached_property
    def seen(self) -> dict[str, float]:
        """``{item_id: value}`` (explicit: last rating, implicit: summed weight)."""
        return {k.decode(): float(v) for k, v in self.seen_raw.items()}


class VersionCache:
    """The item side of one model version (its ``items`` :class:`~online_als.factors.Factors`),
    as loaded from Redis (read-only once built).

    Rows follow ``item_ids`` (sorted, so ties in scores resolve by lower id). The similarity
    index and the regularised Gram are built on first use and kept with the version.
    """

    def __init__(self, version: int, mode: str, rank: int, global_mean: float,
                 params: FoldInParams, items: Factors, counts: I64, loaded_at: float) -> None:
        self.version = version
        self.mode = mode
        self.rank = rank
        self.global_mean = global_mean
        self.params = params
        item_ids = items.id_list()
        self.item_ids = object_ids(item_ids)
        self.id_list: list[str] = item_ids
        self.rows: dict[str, int] = {iid: j for j, iid in enumerate(item_ids)}
        self.rows_b = _Rows((iid.encode(), j) for j, iid in enumerate(item_ids))
        self.item_f = np.ascontiguousarray(items.vectors)  # float32 rows for the hot path
        self.item_b = np.ascontiguousarray(items.biases)
        self.counts = counts
        self.loaded_at = loaded_at
        self.users: tuple[np.ndarray, SimilarityIndex] | None = None  # similar_users, lazy
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.item_f.shape[0])

    @property
    def explicit(self) -> bool:
        return self.mode == "explicit"

    @cached_property
    def quantized(self) -> QuantizedItems:
        """int8 twin of the items: exact top-N scoring only a few candidates in float32."""
        return QuantizedItems(self.item_f, self.item_b if self.explicit else None)

    @cached_property
    def similarity(self) -> SimilarityIndex:
        """Cosine index over the item factors (normalised once per version)."""
        return SimilarityIndex(self.item_f)

    @cached_property
    def gram_reg(self) -> F64:
        """``YᵀY + λI`` for implicit fold-in; Redis meta only keeps its inverse."""
        return gram(self.item_f, self.params.implicit_reg)

    def rows_for(self, item_ids: Iterable[str]) -> I64:
        """Rows of ``item_ids`` in this cache, -1 where unknown."""
        get = self.rows.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64)

    def known_rows(self, item_ids: Iterable[str]) -> I64:
        rows = self.rows_for(item_ids)
        return rows[rows >= 0]

    def seen_rows(self, user: UserRecord) -> I64:
        """Rows of the user's seen items that this version knows."""
        return self.rows_of(user.seen_raw)

    def rows_of(self, raw_ids: Iterable[bytes]) -> I64:
        """Rows of the known ids among ``raw_ids`` (the bytes Redis returned), in their order."""
        ids = raw_ids if isinstance(raw_ids, list) else list(raw_ids)
        rows = np.fromiter(map(self.rows_b.__getitem__, ids), dtype=np.int64, count=len(ids))
        return rows[rows >= 0]

    def allow(self, flt: ItemFilter) -> Allow:
        """``filter=`` as the ``allow`` of :func:`online_als.serving.top_n`."""
        if flt is None:
            return None
        ids = self.item_ids
        if callable(flt):
            pred = flt

            # asked only about the best-scored candidates, so the predicate sees few ids
            def allow_rows(rows: I64) -> npt.NDArray[np.bool_]:
                return np.fromiter((bool(pred(ids[r])) for r in rows.tolist()), dtype=bool,
                                   count=rows.size)

            return allow_rows
        mask = np.zeros(len(self), dtype=bool)
        mask[self.known_rows(flt)] = True
        return mask

    def scores(self, user: UserRecord, item_ids: Sequence[str]) -> F64:
        """Scores of ``user`` for ``item_ids`` (explicit falls back to the biases; implicit 0)."""
        rows = self.rows_for(item_ids)
        if self.explicit:
            vec = user.vector if user.vector is not None else np.zeros(self.rank, np.float32)
            u_rows = np.full(rows.size, 0 if user.vector is not None else -1, dtype=np.int64)
            return predict_explicit(u_rows, rows, vec[None, :], np.array([user.bias], np.float32),
                                    self.item_f, self.item_b, self.global_mean
                                    ).astype(np.float64)
        out = np.zeros(rows.size, dtype=np.float64)
        if user.vector is not None:
            known = rows >= 0
            out[known] = self.item_f[rows[known]].astype(np.float64) @ user.vector.astype(
                np.float64)
        return out

    def pairs(self, rows: I64, scores: npt.ArrayLike) -> list[tuple[str, float]]:
        s = np.asarray(scores, dtype=np.float64).tolist()
        ids = self.id_list
        return [(ids[r], v) for r, v in zip(rows.tolist(), s, strict=True) if r >= 0]
