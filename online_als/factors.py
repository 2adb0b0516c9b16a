"""A model as arrays: one side is :class:`Factors` (ids, vectors, biases), a version is
:class:`ModelArrays` (a mode, users, items and the global mean).

This is the one shape every layer hands a model in: a retrain's result and warm start, the
gate's two models, a Cassandra snapshot read, a Redis dump and a Redis bulk load.

>>> users = Factors(["a", "b"], np.ones((2, 3)), np.zeros(2))
>>> len(users), users.rank, users.vectors.dtype, users.ids
(2, 3, dtype('float32'), ['a', 'b'])
>>> m = ModelArrays("explicit", users, Factors(["x"], np.ones((1, 3)), [0.5]), 3.5)
>>> m.rank, m.state().n_items
(3, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from online_als.model import Mode

if TYPE_CHECKING:
    from online_als.model import ModelState

__all__ = ["Factors", "ModelArrays"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Factors:
    """One side of a model: row ``j`` is entity ``ids[j]``.

    ``vectors`` float32 (n, k) and ``biases`` float32 (n,) (zeros in implicit mode) are
    converted on construction, without a copy when already float32. ``ids`` is None when the
    rows are a matrix's rows with no names (a bare fit). ``aux`` holds the adaptive learner's
    per-entity state rows (explicit mode); None means every entity starts with fresh state.
    """

    ids: Sequence[str] | None
    vectors: F32
    biases: F32
    aux: F32 | None = None

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        biases = np.asarray(self.biases, dtype=np.float32).reshape(-1)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, k), got shape {vectors.shape}")
        n = vectors.shape[0]
        if biases.shape[0] != n:
            raise ValueError(f"{n} vectors but {biases.shape[0]} biases")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"{n} vectors but {len(self.ids)} ids")
        aux = None if self.aux is None else np.asarray(self.aux, dtype=np.float32)
        if aux is not None and (aux.ndim != 2 or aux.shape[0] != n):
            raise ValueError(f"aux state must be ({n}, width), got {aux.shape}")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "biases", biases)
        object.__setattr__(self, "aux", aux)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def rank(self) -> int:
        return int(self.vectors.shape[1])

    def id_list(self) -> list[str]:
        """The ids as a list of str (``ids`` must be set)."""
        if self.ids is None:
            raise ValueError("these factors have no ids (rows of a bare matrix)")
        return [str(i) for i in self.ids]

    def with_ids(self, ids: Sequence[str]) -> Factors:
        """The same arrays named by ``ids``."""
        return Factors(ids, self.vectors, self.biases, self.aux)

    def with_aux(self, aux: F32 | None) -> Factors:
        """The same rows carrying ``aux`` state (None: fresh)."""
        return Factors(self.ids, self.vectors, self.biases, aux)

    def copy(self) -> Factors:
        aux = None if self.aux is None else self.aux.copy()
        ids = None if self.ids is None else list(self.ids)
        return Factors(ids, self.vectors.copy(), self.biases.copy(), aux)


@dataclass(frozen=True, eq=False)
class ModelArrays:
    """A model version: ``users`` and ``items`` of one rank, and the global mean (explicit
    mode; 0.0 in implicit mode)."""

    mode: Mode
    users: Factors
    items: Factors
    global_mean: float = 0.0

    def __post_init__(self) -> None:
        if self.users.rank != self.items.rank:
            raise ValueError(f"user rank {self.users.rank} != item rank {self.items.rank}")

    @property
    def rank(self) -> int:
        return self.users.rank

    def state(self, **kwargs: Any) -> ModelState:
        """A :class:`~online_als.model.ModelState` holding copies of these arrays; ``kwargs``
        as in ``ModelState`` (``global_mean`` defaults to this model's)."""
        from online_als.model import ModelState

        kwargs = {"global_mean": float(self.global_mean), **kwargs}
        return ModelState.from_arrays(
            self.mode, self.users.id_list(), self.users.vectors, self.users.biases,
            self.items.id_list(), self.items.vectors, self.items.biases, **kwargs,
        )  # fmt: skip
