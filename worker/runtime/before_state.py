"""The before-state of a batch, carried by its intent (key format 2).

A recovery recomputes a crashed batch from the state it was first computed from. Format 1 kept
that state on every key it wrote (``bf``/``bb``/``ba`` and ``bid``), doubling each key's size for
good. Format 2 keeps it once per batch and partition, in the partition's checkpoint hash
(``pending_before``), written with the intent and deleted with the commit: per partition, the
ids and rows of the users and items that partition's events touch in the batch.

>>> import numpy as np
>>> from worker.stores.redis.batch_args import PartitionTags
>>> tags = PartitionTags.of(np.array([0, 1, 1]), np.array([0, 0, 2]), 2)
>>> f = np.arange(4, dtype=np.float32).reshape(2, 2)
>>> blobs = encode({0: 10, 2: 12}, {"u": (["a", "b"], tags, f, np.zeros(2, np.float32), None)})
>>> sorted(blobs)
[0, 2]
>>> before = decode([blobs[2]])
>>> before["u"].rows(["b", "a"]).tolist()
[0, -1]
>>> before["u"].factors[0].tolist()
[2.0, 3.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import numpy as np

from online_als.idmap import IdMap
from worker.stores.redis.batch_args import PartitionTags

#: kind -> (ids, tags, factors (n, k), biases (n,), aux (n, w) or None)
Sides = dict[str, tuple[list[str], PartitionTags, np.ndarray, np.ndarray, np.ndarray | None]]


def encode(ends: dict[int, int], sides: Sides) -> dict[int, bytes]:
    """One msgpack blob per partition of ``ends``: the rows its events touch."""
    out: dict[int, bytes] = {}
    keyed = {kind: (np.repeat(np.arange(len(ids)), np.diff(tags.starts)), tags.flat)
             for kind, (ids, tags, _, _, _) in sides.items()}
    for p in ends:
        doc: dict[str, object] = {}
        for kind, (ids, _, f, b, a) in sides.items():
            index, flat = keyed[kind]
            sel = np.unique(index[flat == p])
            doc[kind] = [ids[j] for j in sel.tolist()]
            doc[kind + "f"] = np.ascontiguousarray(f[sel], np.float32).tobytes()
            doc[kind + "b"] = np.ascontiguousarray(b[sel], np.float32).tobytes()
            doc[kind + "a"] = b"" if a is None else np.ascontiguousarray(a[sel], np.float32).tobytes()
        out[p] = msgpack.packb(doc)
    return out


@dataclass
class BeforeRows:
    """Before-state rows of one kind, by id."""

    ids: IdMap
    factors: np.ndarray
    biases: np.ndarray
    aux: np.ndarray | None

    def rows(self, ids: list[str]) -> np.ndarray:
        return self.ids.rows_for(ids, add=False)


def decode(blobs: list[bytes]) -> dict[str, BeforeRows]:
    """The rows of every blob, per kind ('u', 'i'); an id in several blobs (a shared item) has
    the same before-state in each, the batch's."""
    out: dict[str, BeforeRows] = {}
    for kind in ("u", "i"):
        ids: list[str] = []
        f, b, a = [], [], []
        for blob in blobs:
            doc = msgpack.unpackb(blob)
            n = len(doc.get(kind, ()))
            if not n:
                continue
            ids += doc[kind]
            f.append(np.frombuffer(doc[kind + "f"], np.float32).reshape(n, -1))
            b.append(np.frombuffer(doc[kind + "b"], np.float32))
            if doc[kind + "a"]:
                a.append(np.frombuffer(doc[kind + "a"], np.float32).reshape(n, -1))
        firsts: dict[str, int] = {}
        for j, i in enumerate(ids):  # recovery only: a loop per key is fine here
            firsts.setdefault(i, j)
        unique, first = list(firsts), list(firsts.values())
        fa = np.concatenate(f)[first] if f else np.zeros((0, 0), np.float32)
        ba = np.concatenate(b)[first] if b else np.zeros(0, np.float32)
        aa = np.concatenate(a)[first] if a else None
        out[kind] = BeforeRows(IdMap(unique), fa, ba, aa)
    return out
