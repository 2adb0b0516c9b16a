"""Every Redis key online-als reads or writes is built here, and only here.

The layout is specified in ``docs/redis-keys.md``; change both together.

>>> k = RedisKeys("oals")
>>> k.current()
'oals:current'
>>> k.user(3, "u42")
'oals:v3:u:{u42}'
>>> k.checkpoint(3, "ratings", 0)
'oals:v3:ckpt:ratings:0'
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_VERSION = 1
VECTOR_DTYPE = "<f4"  # float32 little-endian, readable from any language
GRAM_DTYPE = "<f8"

# Fields of a vector hash (user or item).
FIELD_FACTORS = "f"
FIELD_BIAS = "b"
FIELD_OFFSET_PREFIX = "o:"  # o:<partition> -> last batch end offset applied to this key
FIELD_PREV_PREFIX = "p:"  # p:<partition> -> factors before that batch (for crash recovery)
FIELD_PREV_BIAS_PREFIX = "pb:"


@dataclass(frozen=True)
class RedisKeys:
    """Builds keys under one prefix. Ids sit inside ``{}`` so that a user's vector and its
    seen-set share a Redis Cluster hash slot (both hash on the id)."""

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
        return f"{self.prefix}:v{version}:u:{{{user_id}}}"

    def item(self, version: int, item_id: str) -> str:
        return f"{self.prefix}:v{version}:i:{{{item_id}}}"

    def seen(self, version: int, user_id: str) -> str:
        """HASH item_id -> summed value: what the user rated/did (serving excludes these)."""
        return f"{self.prefix}:v{version}:s:{{{user_id}}}"

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


def offset_field(partition: int) -> str:
    return f"{FIELD_OFFSET_PREFIX}{partition}"


def prev_field(partition: int) -> str:
    return f"{FIELD_PREV_PREFIX}{partition}"


def prev_bias_field(partition: int) -> str:
    return f"{FIELD_PREV_BIAS_PREFIX}{partition}"
