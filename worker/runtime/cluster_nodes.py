"""A Redis Cluster whose node restarted or failed over is not a consistent prefix.

One Redis that goes back in time takes its checkpoints back with its keys, so the commit
protocol's comparison sees it and a replay from Kafka is exact (``docs/exactly-once.md``). On a
cluster each shard goes back on its own: a master restarted from an older file, or a replica
promoted in its place, loses its keys' last writes while the checkpoints on the other nodes
keep theirs. Nothing in the key space shows that, so the worker watches the masters
themselves: every master's ``run_id`` changes when the process restarts and when a replica
takes over. On a change the key space is restored from Cassandra, once, by whichever worker
takes the load lock first; the others find the new generation and reposition.
"""

from __future__ import annotations

import logging
import threading

from worker.config import Settings
from worker.stores.redis.store import RedisStore

log = logging.getLogger("online_als.worker")


class ClusterNodeChanged(RuntimeError):
    """A cluster master restarted or failed over and there is no Cassandra to restore from."""


class NodeWatch:
    """The masters' run_ids as of the last check; :meth:`changed` says which moved since."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.nodes: dict[str, str] | None = None

    def changed(self) -> list[str]:
        now = self.store.node_identities()
        moved = changed_nodes(self.nodes, now) if self.nodes is not None else []
        self.nodes = now
        if moved:
            log.error("redis cluster master(s) %s restarted or failed over: their keys may have "
                      "gone back in time without the checkpoints on other nodes; restoring from "
                      "Cassandra before writing again", moved)
        return moved


def changed_nodes(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """Masters that are new, gone, or have another ``run_id``.

    >>> changed_nodes({"a:1": "x", "b:2": "y"}, {"a:1": "x", "b:2": "z"})
    ['b:2']
    """
    return sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))


def restore_after_node_change(settings: Settings, store: RedisStore, seen_generation: str | None,
                              stop: threading.Event) -> None:
    """Restore the key space from Cassandra unless another process did since this one last
    saw ``seen_generation``. Waits one socket timeout first, so that batches other workers had
    in flight land before the load replaces their keys (their next batch checks the nodes
    first and waits here)."""
    from worker.control import lifecycle
    from worker.stores.cassandra.store import CassandraStore

    if not settings.cassandra.enabled:
        raise ClusterNodeChanged(
            "a Redis Cluster master restarted or failed over: its keys may have gone back in "
            "time without the checkpoints on other nodes, and without Cassandra "
            "(cassandra.enabled=false) nothing can rebuild an exact state; restore the cluster "
            "from a consistent backup, or wipe the key space to start over")
    while not stop.is_set():
        with lifecycle.load_lock(store, wait_s=1.0) as mine:
            if not mine:
                continue
            if store.generation() != seen_generation:
                log.info("another process restored the key space after the node change")
                return
            stop.wait(min(settings.redis.socket_timeout_s, 5.0))
            with CassandraStore(settings.cassandra) as cass:
                report = lifecycle.restore(settings, cass, store, force=True)
            log.warning("restored version %d from Cassandra after the cluster node change, at %s",
                        report.version, report.checkpoints)
            return
