"""How one batch's per-key arguments are laid out for ``write_vectors.lua``: the seen pairs of
each user and the partitions whose events touched each key, built with NumPy (no Python loop
per event) and cut per script call by :meth:`RedisStore.write_vectors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from online_als.arrays import concat_ranges


class SeenUpdates:
    """Per-user (item, value) pairs of a batch, laid out as write_vectors.lua expects.

    Built with NumPy from events sorted by user row, so there is no Python loop per event.
    """

    def __init__(self, seen_keys: list[str], user_rows: np.ndarray, item_ids: np.ndarray,
                 values: np.ndarray, mode: str) -> None:
        order = np.argsort(user_rows, kind="stable")
        rows = np.asarray(user_rows)[order]
        self.items = np.asarray(item_ids, dtype=object)[order]
        self.values = np.char.mod("%.9g", np.asarray(values)[order].astype(np.float64)).astype(object)
        self.seen_keys = seen_keys
        self.mode = mode
        self.starts = np.searchsorted(rows, np.arange(len(seen_keys) + 1))

    def for_group(self, group: np.ndarray) -> tuple[list[str], list[int], list[Any]]:
        """(seen keys, flat (local key index, pair count), flat (item, value)) of ``group``."""
        counts = self.starts[group + 1] - self.starts[group]
        has = np.flatnonzero(counts)
        if len(has) == 0:
            return [], [], []
        rows, cnt = group[has], counts[has]
        pos = concat_ranges(self.starts[rows], cnt)
        pairs = np.empty(2 * len(pos), dtype=object)
        pairs[0::2], pairs[1::2] = self.items[pos], self.values[pos]
        index = np.column_stack((has + 1, cnt)).ravel()
        return [self.seen_keys[r] for r in rows.tolist()], index.tolist(), pairs.tolist()


@dataclass(frozen=True)
class PartitionTags:
    """Per key, the partitions whose events touched it in a batch, as a flat array and
    starts (key j's are ``flat[starts[j]:starts[j + 1]]``)."""

    flat: np.ndarray  # int64
    starts: np.ndarray  # int64, n + 1

    @classmethod
    def none(cls, n: int) -> PartitionTags:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(n + 1, dtype=np.int64))

    @classmethod
    def of(cls, rows: np.ndarray, partitions: np.ndarray, n: int) -> PartitionTags:
        """Tags of ``n`` keys from each event's key row and partition."""
        pairs = np.unique(rows.astype(np.int64) * 65536 + partitions.astype(np.int64))
        key = pairs // 65536
        starts = np.searchsorted(key, np.arange(n + 1))
        return cls(pairs % 65536, starts)

    def for_key(self, j: int) -> list[int]:
        return self.flat[self.starts[j]:self.starts[j + 1]].tolist()

    def for_group(self, group: np.ndarray) -> tuple[list[int], list[int]]:
        """The group's tags and 1-based starts, as write_vectors.lua reads them."""
        lens = self.starts[group + 1] - self.starts[group]
        flat = self.flat[concat_ranges(self.starts[group], lens)]
        starts = np.concatenate(([1], 1 + np.cumsum(lens)))
        return flat.tolist(), starts.tolist()


def parse_spec(spec: str) -> list[tuple[int, int]]:
    """``"p=e,q=f"`` -> [(p, e), (q, f)]."""
    return [(int(p), int(e)) for p, e in (x.split("=") for x in spec.split(",") if x)]
