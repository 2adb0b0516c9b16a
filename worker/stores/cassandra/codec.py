"""Packing of columns into blobs: the on-disk format of log and factor blocks.

All numbers are little-endian so any language can read a block. Id lists are packed as
``0x00`` + the ids joined with NUL (UTF-8): decoding a whole block is then one ``decode`` and
one ``split`` in C, far faster than per-id slicing. An id that itself contains NUL (the event
decoder does not forbid it) switches the block to ``0x01`` + uint32 byte lengths + UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IDS_JOINED = 0
IDS_LENGTHS = 1

F32: np.dtype[np.float32] = np.dtype("<f4")
F64: np.dtype[np.float64] = np.dtype("<f8")
I64: np.dtype[np.int64] = np.dtype("<i8")
U32: np.dtype[np.uint32] = np.dtype("<u4")


class BlockFormatError(ValueError):
    """A stored blob does not match its declared row count (corruption or format mismatch)."""


def pack_ids(ids: Sequence[str]) -> bytes:
    """Pack strings into one blob (see the module docstring for the two layouts)."""
    joined = "\0".join(ids)
    if len(ids) == 0 or joined.count("\0") == len(ids) - 1:
        return bytes([IDS_JOINED]) + joined.encode("utf-8")
    encoded = [s.encode("utf-8") for s in ids]
    lengths = np.fromiter((len(b) for b in encoded), dtype=U32, count=len(encoded))
    return bytes([IDS_LENGTHS]) + lengths.tobytes() + b"".join(encoded)


def unpack_ids(blob: bytes, n: int) -> list[str]:
    """The ``n`` strings packed by :func:`pack_ids`."""
    if n == 0:
        return []
    if blob[0] == IDS_JOINED:
        out = blob[1:].decode("utf-8").split("\0")
    elif blob[0] == IDS_LENGTHS:
        lengths = np.frombuffer(blob, dtype=U32, count=n, offset=1).astype(np.int64)
        ends = np.cumsum(lengths) + 1 + 4 * n
        starts = ends - lengths
        out = [blob[s:e].decode("utf-8") for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    else:
        raise BlockFormatError(f"unknown id packing {blob[0]}")
    if len(out) != n:
        raise BlockFormatError(f"id blob holds {len(out)} ids, row says {n}")
    return out


def pack_array(values: npt.ArrayLike, dtype: np.dtype[np.generic]) -> bytes:
    """A 1-D or 2-D array as C-order little-endian bytes of ``dtype``."""
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def unpack_array(blob: bytes, dtype: np.dtype[np.generic], n: int, width: int = 1) -> np.ndarray:
    """A read-only view of ``n`` (x ``width``) values; checks the size against the row count."""
    expected = n * width * dtype.itemsize
    if len(blob) != expected:
        raise BlockFormatError(f"blob of {len(blob)} bytes, expected {expected} ({n}x{width} {dtype})")
    arr = np.frombuffer(blob, dtype=dtype)
    return arr.reshape(n, width) if width != 1 else arr
