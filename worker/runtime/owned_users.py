"""The users of a worker's partitions, held in memory while it owns them.

Kafka keys events by user, so each user has exactly one writer: the worker that holds the
user's partition. What that worker last wrote for a user is therefore what Redis holds, and
reading it back every batch is wasted work for Redis and for the worker. The commit protocol
keeps the rows it committed here and reads from Redis only users it has not seen since it
took its partitions. The rows are dropped whenever that reasoning could fail: on every
assignment change, version switch, restore or Redis regression (:meth:`clear`), and before a
recovery (which reads before-images from Redis instead).

>>> import numpy as np
>>> owned = OwnedUsers(rank=2, aux_width=0, max_users=10)
>>> owned.keep(["u1", "u2"], np.ones((2, 2), np.float32), np.zeros(2, np.float32), None)
>>> rows = owned.rows(["u2", "u9"]); rows.tolist()
[1, -1]
>>> owned.factors[rows[0]].tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import numpy as np

from online_als.idmap import IdMap


class OwnedUsers:
    """Factors, biases and learner state (``aux``) of users, by row of an :class:`IdMap`;
    at most ``max_users`` rows (past that, everything is dropped and read again: simpler
    than an eviction order, and rare at a sensible bound)."""

    def __init__(self, rank: int, aux_width: int, max_users: int, version: int = 0) -> None:
        self.rank, self.aux_width, self.max_users = rank, aux_width, max_users
        self.version = version  # the model version the rows belong to
        self.clear()

    def clear(self) -> None:
        self.ids = IdMap()
        self.factors = np.zeros((0, self.rank), np.float32)
        self.biases = np.zeros(0, np.float32)
        self.aux = np.zeros((0, self.aux_width), np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, users: list[str]) -> np.ndarray:
        """Row of each user, -1 where not held."""
        return self.ids.rows_for(users, add=False)

    def keep(self, users: list[str], factors: np.ndarray, biases: np.ndarray,
             aux: np.ndarray | None) -> None:
        """Hold these committed rows (new users appended)."""
        if len(self.ids) + len(users) > self.max_users:
            self.clear()
            if len(users) > self.max_users:
                return
        rows = self.ids.rows_for(users, add=True)
        n = len(self.ids)
        if n > len(self.biases):
            cap = max(n, 2 * len(self.biases), 1024)
            self.factors = _grow(self.factors, cap)
            self.biases = _grow(self.biases, cap)
            self.aux = _grow(self.aux, cap)
        self.factors[rows] = factors
        self.biases[rows] = biases
        if aux is not None and self.aux_width:
            self.aux[rows] = aux


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.zeros((cap, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    return out
