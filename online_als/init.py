"""Deterministic initial vectors for new ids.

The vector of an id depends only on ``(seed, salt, id, k, scale)``, so a worker and an
in-memory model that meet the same new id create the same vector, whatever the batch.

Algorithm (a stable format: changing it changes every new vector):

1. ``key = blake2b(id UTF-8, key=seed as 8 little-endian bytes, person=salt, digest_size=8)``
   read as a little-endian uint64;
2. uniform bits ``u_m = splitmix64(key + (m + 1) * 0x9E3779B97F4A7C15)`` for ``m = 0..2*ceil(k/2)-1``;
3. Box-Muller on pairs ``(u_2j, u_2j+1)`` (53-bit uniforms), giving ``k`` standard normals;
4. ``vector = float32(normal * scale)``. ``scale = 0`` gives zeros.

Users and items use different salts (:data:`USER_SALT`, :data:`ITEM_SALT`) so user "42" and
item "42" do not start from the same vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

import numpy as np
from numpy.typing import NDArray

from online_als.idmap import as_id_list

USER_SALT = "user"
ITEM_SALT = "item"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # uint64 array arithmetic wraps modulo 2**64, which is what splitmix64 needs.
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def id_keys(ids: Iterable[Any], seed: int, salt: str = "") -> NDArray[np.uint64]:
    """64-bit keyed hash of each id (step 1 of the module docstring)."""
    key = (int(seed) % 2**64).to_bytes(8, "little")
    person = salt.encode("utf-8")
    if len(person) > 16:
        raise ValueError(f"salt must encode to at most 16 bytes, got {salt!r}")
    digests = b"".join(
        blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8, key=key, person=person).digest()
        for s in as_id_list(ids)
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def init_vectors(
    ids: Iterable[Any], k: int, seed: int, scale: float, *, salt: str = ""
) -> NDArray[np.float32]:
    """Float32 ``(len(ids), k)`` normal(0, scale) vectors, deterministic per id.

    >>> a = init_vectors(["u1", "u2"], 4, seed=7, scale=0.1)
    >>> b = init_vectors(["u2"], 4, seed=7, scale=0.1)
    >>> a.shape, a.dtype.name, bool((a[1] == b[0]).all())
    ((2, 4), 'float32', True)
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
    keys = id_keys(ids, seed, salt)
    n = len(keys)
    if scale == 0 or n == 0:
        return np.zeros((n, int(k)), np.float32)
    pairs = (int(k) + 1) // 2
    counters = np.arange(1, 2 * pairs + 1, dtype=np.uint64) * _GOLDEN
    bits = _splitmix64(keys[:, None] + counters[None, :]) >> np.uint64(11)
    uni = bits.astype(np.float64) * (1.0 / 2**53)  # [0, 1)
    u1 = 1.0 - uni[:, 0::2]  # (0, 1]: log is finite
    u2 = uni[:, 1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    normals = np.empty((n, 2 * pairs), np.float64)
    normals[:, 0::2] = radius * np.cos(2.0 * np.pi * u2)
    normals[:, 1::2] = radius * np.sin(2.0 * np.pi * u2)
    return np.ascontiguousarray(normals[:, :k] * scale, dtype=np.float32)
