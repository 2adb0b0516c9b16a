"""Every Redis key online-als reads or writes is built here, and only here.

The layout is specified in ``docs/redis-keys.md``; change both together.

>>> k = RedisKeys("oals")
>>> k.current()
'oals:current'
>>> k.user(3, "u42")
'oals:v3:u:{u42}'
>>> k.checkpoint(3, "ratings", 0)
'oals:v3:ckpt:ratings:0'
>>> k.user(3, "}x{")  # braces (and '%') are percent-escaped inside the hash tag
'oals:v3:u:{%7Dx%7B}'
>>> k.attr_items("category", "Comedy")  # item attributes live outside every version
'oals:attr:category:{Comedy}'
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_VERSION = 2
#: Key formats this code reads. Format 1 kept a before-image of every field on each vector key
#: (``bf``/``bb``/``ba``, ``bid``); format 2 keeps the before-state with the batch's intent
#: instead. A format 1 namespace is read and written as is (its old before-image fields are
#: ignored, and a format 1 pending intent is still recovered from them).
READABLE_FORMATS = (1, 2)
VECTOR_DTYPE = "<f4"  # float32 little-endian, readable from any language
GRAM_DTYPE = "<f8"

# Fields of a vector hash (user or item). The Lua scripts receive these names from
# worker/stores/redis/store.py, so this is the one place they are written.
FIELD_FACTORS = "f"  # float32 * k
FIELD_BIAS = "b"  # float32
FIELD_COUNT = "n"  # items: events applied (popularity); integer text
FIELD_AUX = "a"  # explicit, adaptive learner: float32 per-entity state (serving ignores it)
FIELD_OFFSET_PREFIX = "o:"  # o:<partition> -> last batch end offset applied to this key
FIELD_BEFORE_PREFIX = "b"  # format 1 only: b<field> (bf, bb, ...) before batch `bid` wrote it
FIELD_BATCH = "bid"  # format 1 only: the batch whose before-images are stored


def key_id(id_: str) -> str:
    """The id as it appears inside a key's ``{...}``: ``%``, ``{`` and ``}`` percent-escaped
    (``%25``, ``%7B``, ``%7D``); every other id is unchanged.

    Redis Cluster hashes the text between the first ``{`` and the next ``}``. An id holding a
    brace would cut that tag short (``}x`` gives ``{}x}``, an empty tag, so the whole key is
    hashed) and put a user's vector and its seen-hash in different slots. Escaping ``%`` too
    keeps the mapping one-to-one.

    >>> key_id("u42"), key_id("a{b}"), key_id("50%")
    ('u42', 'a%7Bb%7D', '50%25')
    """
    if "{" in id_ or "}" in id_ or "%" in id_:
        return id_.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return id_


_ATTR_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def check_attr_name(name: str) -> str:
    """An attribute name as it appears in keys: 1-64 of ``[A-Za-z0-9_-]`` (no ``:``/braces, so
    it never needs escaping); anything else raises ``ValueError``.

    >>> check_attr_name("category")
    'category'
    """
    if not 0 < len(name) <= 64 or not _ATTR_NAME_CHARS.issuperset(name):
        raise ValueError(f"attribute name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


@dataclass(frozen=True)
class RedisKeys:
    """Builds keys under one prefix. Ids sit inside ``{}`` (escaped by :func:`key_id`) so that
    a user's vector and its seen-set share a Redis Cluster hash slot (both hash on the id)."""

    prefix: str

    def current(self) -> str:
        """STRING: the serving model version number; switched with one SET."""
        return f"{self.prefix}:current"

    def version_counter(self) -> str:
        """STRING: INCR allocates new version numbers."""
        return f"{self.prefix}:next_version"

    def meta(self, version: int) -> str:
        """HASH: mode, rank, format, global_mean, status, grams of one version."""
        return f"{self.prefix}:v{version}:meta"

    def user(self, version: int, user_id: str) -> str:
        return f"{self.prefix}:v{version}:u:{{{key_id(user_id)}}}"

    def item(self, version: int, item_id: str) -> str:
        return f"{self.prefix}:v{version}:i:{{{key_id(item_id)}}}"

    def seen(self, version: int, user_id: str) -> str:
        """HASH item_id -> summed value: what the user rated/did (serving excludes these)."""
        return f"{self.prefix}:v{version}:s:{{{key_id(user_id)}}}"

    def user_index(self, version: int) -> str:
        """SET of user ids present in the version."""
        return f"{self.prefix}:v{version}:users"

    def item_index(self, version: int) -> str:
        """SET of item ids present in the version."""
        return f"{self.prefix}:v{version}:items"

    def item_counts(self, version: int) -> str:
        """ZSET item_id -> number of events (popularity fallback)."""
        return f"{self.prefix}:v{version}:popular"

    def checkpoint(self, version: int, topic: str, partition: int) -> str:
        """HASH offset (next to consume), pending_start, pending_end, updated_at."""
        return f"{self.prefix}:v{version}:ckpt:{topic}:{partition}"

    def pending_before(self, version: int, topic: str, partition: int, batch_id: str) -> str:
        """STRING (msgpack): the before-state of the keys a pending batch's events in this
        partition touch (format 2); set before its intent, deleted after its commit, with a
        TTL as a backstop (``worker.runtime.before_state``)."""
        return f"{self.prefix}:v{version}:ckpt:{topic}:{partition}:before:{batch_id}"

    def pending_befores(self, version: int, topic: str, partition: int) -> str:
        """SET of the batch ids whose before-state blobs exist for this partition, so that a
        new owner deletes those a crash left behind."""
        return f"{self.prefix}:v{version}:ckpt:{topic}:{partition}:befores"

    def checkpoint_pattern(self, version: int, topic: str) -> str:
        return f"{self.prefix}:v{version}:ckpt:{topic}:*"

    def version_pattern(self, version: int) -> str:
        return f"{self.prefix}:v{version}:*"

    def heartbeat(self, worker_name: str) -> str:
        """STRING with TTL: a worker is alive while its heartbeat key exists."""
        return f"{self.prefix}:hb:{worker_name}"

    def heartbeat_pattern(self) -> str:
        return f"{self.prefix}:hb:*"

    def switch_log(self) -> str:
        """LIST of JSON records: every pointer switch (retrain promotion, rollback) and why."""
        return f"{self.prefix}:switches"

    def generation(self) -> str:
        """STRING: a random token set when this key space is created or restored. A worker
        that finds it changed or gone knows Redis lost its state (wipe, restart without
        persistence) and stops writing until the key space is restored."""
        return f"{self.prefix}:generation"

    def restore_lock(self) -> str:
        """STRING with TTL: held by the one process restoring a lost key space."""
        return f"{self.prefix}:lock:restore"

    # -- item attributes (business filters; not part of any model version) -------------------
    def attr_names(self) -> str:
        """SET of the attribute names that have values (e.g. ``category``)."""
        return f"{self.prefix}:attrs"

    def attr_values(self, name: str) -> str:
        """SET of the values attribute ``name`` takes (e.g. ``Comedy``, ``Drama``)."""
        return f"{self.prefix}:attr:{check_attr_name(name)}"

    def attr_items(self, name: str, value: str) -> str:
        """SET of the item ids whose attribute ``name`` includes ``value``."""
        return f"{self.prefix}:attr:{check_attr_name(name)}:{{{key_id(value)}}}"

    def item_attrs(self, item_id: str) -> str:
        """HASH attribute name -> the item's values as a JSON array of strings."""
        return f"{self.prefix}:attrs:i:{{{key_id(item_id)}}}"

    def attr_serial(self) -> str:
        """STRING: INCR after every change of the attributes (servers reload when it moves)."""
        return f"{self.prefix}:attrs:serial"

    def retrain_lock(self) -> str:
        """STRING with TTL: held by the one running retrain (renewed while it runs)."""
        return f"{self.prefix}:lock:retrain"
