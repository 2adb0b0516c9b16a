"""Item attributes for business filters (categories, brands, ...): stored in Redis under the
``<P>:attr...`` keys of ``docs/redis-keys.md``, read by serving into :class:`AttributeSets`.

Attributes are catalogue data, not model state: they live outside every model version, so a
version switch, a retrain or a rollback leaves them as they are. Every change ends with
``INCR <P>:attrs:serial``; a server reloads the sets when that number moved (one ``GET`` per
check), so attributes can be updated while serving.

>>> sets = AttributeSets(1, {"category": {"Comedy": frozenset({"1", "3"})}})
>>> sorted(sets.items_with("category", ["Comedy", "Horror"]))
['1', '3']
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import redis

from worker.serving.cache import VersionCache
from worker.stores.redis.keys import RedisKeys, check_attr_name

Mask = npt.NDArray[np.bool_]
_MASKS_KEPT = 4096  # (version, attribute, value) masks kept per serial


@dataclass
class AttributeSets:
    """``{name: {value: frozenset(item ids)}}`` as of ``serial``, with row masks per cache."""

    serial: int
    sets: dict[str, dict[str, frozenset[str]]]
    _masks: dict[tuple[int, float, str, str], Mask] = field(default_factory=dict, repr=False)

    def items_with(self, name: str, values: Iterable[str]) -> set[str]:
        """Ids of the items whose attribute ``name`` has any of ``values``."""
        by_value = self.sets.get(name, {})
        out: set[str] = set()
        for v in values:
            out |= by_value.get(v, frozenset())
        return out

    def mask(self, cache: VersionCache, name: str, values: Iterable[str]) -> Mask:
        """Rows of ``cache`` whose attribute ``name`` has any of ``values`` (an unknown name or
        value matches nothing). Masks are built once per version cache and value."""
        out = np.zeros(len(cache), dtype=bool)
        by_value = self.sets.get(name, {})
        for v in values:
            key = (cache.version, cache.loaded_at, name, v)
            m = self._masks.get(key)
            if m is None:
                m = np.zeros(len(cache), dtype=bool)
                m[cache.known_rows(by_value.get(v, ()))] = True
                if len(self._masks) >= _MASKS_KEPT:
                    self._masks.clear()
                self._masks[key] = m
            out |= m
        return out


EMPTY = AttributeSets(0, {})


def _decode(values: Iterable[bytes]) -> list[str]:
    return [v.decode() for v in values]


def read_attribute_sets(client: Any, keys: RedisKeys) -> AttributeSets:
    """Every attribute set in three pipelined rounds (names, values, item sets)."""
    serial = int(client.get(keys.attr_serial()) or 0)
    names = sorted(_decode(client.smembers(keys.attr_names())))
    pipe = client.pipeline(transaction=False)
    for n in names:
        pipe.smembers(keys.attr_values(n))
    values = [sorted(_decode(vs)) for vs in pipe.execute()] if names else []
    pipe = client.pipeline(transaction=False)
    pairs = [(n, v) for n, vs in zip(names, values, strict=True) for v in vs]
    for n, v in pairs:
        pipe.smembers(keys.attr_items(n, v))
    sets: dict[str, dict[str, frozenset[str]]] = {n: {} for n in names}
    for (n, v), ids in zip(pairs, pipe.execute() if pairs else [], strict=True):
        sets[n][v] = frozenset(_decode(ids))
    return AttributeSets(serial, sets)


class AttributeCache:
    """The attribute sets of one prefix, re-checked (one ``GET`` of the serial) at most every
    ``refresh_s`` on :meth:`get` and at once on :meth:`refresh`; loaded on first use only, so
    a server that never filters by attribute never reads them."""

    def __init__(self, client: Any, keys: RedisKeys, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.keys, self.refresh_s, self._clock = client, keys, refresh_s, clock
        self._sets: AttributeSets | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()

    @property
    def loaded(self) -> AttributeSets | None:
        return self._sets

    def get(self) -> AttributeSets:
        sets = self._sets
        if sets is not None and self._clock() - self._checked_at < self.refresh_s:
            return sets
        return self.refresh()

    def refresh(self) -> AttributeSets:
        """Re-read the serial; reload the sets when it moved (keep the old ones on an error)."""
        with self._lock:
            try:
                serial = int(self.client.get(self.keys.attr_serial()) or 0)
                self._checked_at = self._clock()
                if self._sets is None or serial != self._sets.serial:
                    self._sets = read_attribute_sets(self.client, self.keys)
            except redis.RedisError:
                if self._sets is None:
                    raise
            return self._sets


# -- writes ------------------------------------------------------------------------------------
def _values_of(raw: bytes | None) -> list[str]:
    return list(orjson.loads(raw)) if raw else []


def write_attributes(client: Any, keys: RedisKeys, name: str,
                     items: Mapping[str, Iterable[str]], *, replace: bool = False,
                     cluster: bool = False) -> int:
    """Set attribute ``name`` of the given items (an empty iterable removes it from an item).

    ``replace=True``: the attribute becomes exactly ``items`` (every other item loses it).
    One MULTI/EXEC on a single Redis, so a server never reads half a change (a Cluster gets a
    plain pipeline: keys of several slots). Ends with ``INCR <P>:attrs:serial``. Returns the
    new serial.
    """
    check_attr_name(name)
    new = {str(i): sorted({str(v) for v in vs}) for i, vs in items.items()}
    old_values = set(_decode(client.smembers(keys.attr_values(name))))
    pipe = client.pipeline(transaction=not cluster)
    if replace:
        rd = client.pipeline(transaction=False)
        for v in old_values:
            rd.smembers(keys.attr_items(name, v))
        old_items = set().union(*map(_decode, rd.execute())) if old_values else set()
        for v in old_values:
            pipe.delete(keys.attr_items(name, v))
        pipe.delete(keys.attr_values(name))
        for i in old_items - set(new):
            pipe.hdel(keys.item_attrs(i), name)
        values_left: set[str] = set()
    else:
        rd = client.pipeline(transaction=False)
        for i in new:
            rd.hget(keys.item_attrs(i), name)
        for i, raw in zip(new, rd.execute() if new else [], strict=True):
            for v in _values_of(raw):
                pipe.srem(keys.attr_items(name, v), i)
        values_left = old_values
    by_value: dict[str, list[str]] = {}
    for i, vs in new.items():
        for v in vs:
            by_value.setdefault(v, []).append(i)
        if vs:
            pipe.hset(keys.item_attrs(i), name, orjson.dumps(vs))
        else:
            pipe.hdel(keys.item_attrs(i), name)
    for v, ids in by_value.items():
        for s in range(0, len(ids), 5000):
            pipe.sadd(keys.attr_items(name, v), *ids[s:s + 5000])
    if by_value:
        pipe.sadd(keys.attr_values(name), *by_value)
    if by_value or values_left:
        pipe.sadd(keys.attr_names(), name)
    else:
        pipe.srem(keys.attr_names(), name)
    pipe.incr(keys.attr_serial())
    return int(pipe.execute()[-1])


def read_item_attributes(client: Any, keys: RedisKeys, item_id: str) -> dict[str, list[str]]:
    """``{name: [values]}`` of one item."""
    raw = client.hgetall(keys.item_attrs(item_id))
    return {k.decode(): _values_of(v) for k, v in raw.items()}


def read_attribute_file(path: str | Path, dataset: str = "ml-100k") -> dict[str, tuple[str, ...]]:
    """``{item_id: values}`` from a file: MovieLens genres (a data folder holding ``ml-100k/``
    or ``ml-latest-small/``, that folder itself, ``u.item[.gz]`` or ``movies.csv[.gz]``), or a
    CSV ``item_id,values`` with a header row and ``|`` between values (``1,Comedy|Drama``)."""
    from online_als.datasets import load_movielens_items

    p = Path(path)
    name = p.name.removesuffix(".gz")
    if p.is_dir() and any((p / f).exists() for f in ("u.item", "u.item.gz")):
        p, dataset = p.parent, "ml-100k"
    elif p.is_dir() and any((p / f).exists() for f in ("movies.csv", "movies.csv.gz")):
        p, dataset = p.parent, "ml-latest-small"
    elif p.is_file() and name in ("u.item", "movies.csv"):
        p, dataset = p.parent.parent, ("ml-100k" if name == "u.item" else "ml-latest-small")
    if p.is_dir():
        if dataset not in ("ml-100k", "ml-latest-small"):
            raise ValueError(f"unknown dataset {dataset!r}; use ml-100k or ml-latest-small")
        cat = load_movielens_items(p, dataset)  # type: ignore[arg-type]
        return dict(zip(cat.item_ids.tolist(), cat.genres, strict=True))
    raw = p.read_bytes()
    text = (raw if raw[:2] != b"\x1f\x8b" else __import__("gzip").decompress(raw)).decode()
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or len(header) < 2:
        raise ValueError(f"{p}: expected a CSV header 'item_id,values' and rows like "
                         "'1,Comedy|Drama'")
    return {r[0]: tuple(v for v in r[1].split("|") if v) for r in rows if r and r[0]}
