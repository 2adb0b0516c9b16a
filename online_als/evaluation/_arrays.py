"""Small vectorised grouping helpers shared by the evaluation modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def factorize(ids: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(uniques, codes)`` with ``uniques[codes] == ids``; uniques sorted, codes ``int64``."""
    uniques, codes = np.unique(np.asarray(ids), return_inverse=True)
    return uniques, codes.astype(np.int64).reshape(-1)


def lookup(sorted_uniques: np.ndarray, ids: npt.ArrayLike, missing: int = -1) -> np.ndarray:
    """Codes of ``ids`` in ``sorted_uniques`` (``missing`` where absent)."""
    ids_arr = np.asarray(ids)
    if sorted_uniques.shape[0] == 0 or ids_arr.size == 0:
        return np.full(ids_arr.shape, missing, np.int64)
    pos = np.searchsorted(sorted_uniques, ids_arr)
    pos = np.minimum(pos, sorted_uniques.shape[0] - 1)
    found = sorted_uniques[pos] == ids_arr
    return np.where(found, pos, missing).astype(np.int64)


def rank_in_group(codes: np.ndarray, sort_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its 0-based position within its group ordered by ``sort_key`` (ties: row
    order), and the size of its group."""
    n = codes.shape[0]
    order = np.lexsort((np.arange(n), sort_key, codes))
    sorted_codes = codes[order]
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = np.flatnonzero(is_start)
    sizes_per_group = np.diff(np.append(starts, n))
    group_of_pos = np.cumsum(is_start) - 1
    pos_sorted = np.arange(n) - starts[group_of_pos]
    rank = np.empty(n, np.int64)
    rank[order] = pos_sorted
    size = np.empty(n, np.int64)
    size[order] = sizes_per_group[group_of_pos]
    return rank, size


def split_by_group(codes: np.ndarray, values: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """``values`` split into ``n_groups`` arrays by ``codes`` (stable within a group)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
    sorted_values = values[order]
    return [sorted_values[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


def pad_rows(rows: Any, width: int, fill: Any) -> np.ndarray:
    """A 2-D array of exactly ``width`` columns from a 2-D array or from ragged rows
    (longer rows truncated, shorter ones padded with ``fill``)."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        arr = rows
    else:
        seq = [np.asarray(r).reshape(-1) for r in rows]
        lens = [r.shape[0] for r in seq]
        if seq and min(lens) == max(lens):
            arr = np.stack(seq)
        else:
            kinds = {r.dtype.kind for r in seq if r.shape[0]}
            dtype: Any = object if kinds & {"U", "O", "S"} else np.int64
            arr = np.full((len(seq), max(lens, default=0)), fill, dtype=dtype)
            for i, r in enumerate(seq):
                arr[i, : r.shape[0]] = r
    if arr.shape[1] >= width:
        return arr[:, :width]
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    pad = np.full((arr.shape[0], width - arr.shape[1]), fill, dtype=arr.dtype)
    return np.concatenate([arr, pad], axis=1)
