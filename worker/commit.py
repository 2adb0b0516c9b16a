"""The commit protocol: the one object that decides what is applied, in which order, and
what a crash leaves behind (spec: ``docs/exactly-once.md``).

Per assigned partition it holds the position (next offset to apply) and a pending intent
found at assignment. One batch goes through numbered steps:

1. **fence**   on assignment, ``own``: the partition's checkpoint records this owner's token;
               a worker that lost the partition (a zombie past its poll interval) is refused
               in every later step, so it can neither rewind the checkpoint nor erase the
               new owner's intent.
2. **select**  drop what is below the position; while an intent is pending, rebuild exactly
               that batch's messages of the partitions this owner holds (the other partitions
               of the batch may be recovered elsewhere: every (key, partition) pair is guarded
               on its own, so nothing is applied twice and nothing is lost).
3. **compute** read + kernel (:meth:`BatchApplier.prepare`); recovery reads before-images.
4. **intent**  ``pending_end``/``pending_batch`` per partition, fenced.
5. **write**   idempotent vector, seen and index writes (one pipeline; per slot on a cluster).
6. **commit**  checkpoint ``offset = end + 1`` per partition, fenced and only forward;
               the intent is cleared only if it is this batch's.

A failure in 4-6 is retried by running 3-6 again as a recovery of the same batch id. The
worker loop and the retrain catch-up both apply through :meth:`CommitProtocol.commit`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from worker.applier import ApplyResult, BatchApplier, DecodedMessages, VersionState
from worker.redis_store import Checkpoint, RedisStore

log = logging.getLogger("online_als.commit")

REFUSED, DONE, ALREADY = 0, 1, 2


class Fenced(RuntimeError):
    """Another owner holds these partitions now; this process must not write for them."""

    def __init__(self, partitions: list[int], step: str) -> None:
        super().__init__(f"partitions {partitions} are owned by another worker now "
                         f"({step} refused)")
        self.partitions, self.step = partitions, step


@dataclass
class Selection:
    """What :meth:`CommitProtocol.select` chose to apply now."""

    messages: list[Any]
    batch_id: str
    recovery: bool


@dataclass
class CommitProtocol:
    """Positions, intents and fencing of one process over one version's checkpoints."""

    store: RedisStore
    applier: BatchApplier
    topic: str
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    positions: dict[int, int] = field(default_factory=dict)
    pending: dict[int, Checkpoint] = field(default_factory=dict)
    carry: list[Any] = field(default_factory=list)
    tokens: dict[int, str] = field(default_factory=dict)
    fenced_total: int = 0

    # -- 1. fence ------------------------------------------------------------------------
    def assign(self, version: int, partitions: list[int]) -> dict[int, int | None]:
        """Take ``partitions`` of ``version``: returns each one's start (None: never applied)."""
        # one token per assignment, so a zombie of ours is fenced too
        tokens = {p: f"{self.owner}:{uuid.uuid4().hex[:8]}" for p in partitions}
        self.store.checkpoint_step(version, self.topic, "own", tokens, {p: [] for p in partitions})
        self.tokens.update(tokens)
        cps = self.store.read_checkpoints(version, self.topic, partitions)
        out: dict[int, int | None] = {}
        for p in partitions:
            cp = cps[p]
            self.positions[p] = cp.offset if cp.offset is not None else 0
            if cp.has_pending:
                self.pending[p] = cp
            out[p] = cp.offset
        return out

    def revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)
            self.pending.pop(p, None)
            self.tokens.pop(p, None)
        self.carry = [m for m in self.carry if m.partition() in self.positions]

    def reset(self) -> list[int]:
        """Forget every partition (a version switch or a restore); returns those held."""
        held = sorted(self.positions)
        self.revoke(held)
        self.carry = []
        return held

    # -- 2. select -----------------------------------------------------------------------
    def select(self, msgs: list[Any]) -> Selection | None:
        fresh = [m for m in self.carry + msgs if m.partition() in self.positions
                 and m.offset() >= self.positions[m.partition()]]
        self.carry = []
        if not fresh:
            return None
        if not self.pending:
            return Selection(fresh, uuid.uuid4().hex, False)
        batch_id = next(iter(self.pending.values())).pending_batch or ""
        group = {p: cp for p, cp in self.pending.items() if cp.pending_batch == batch_id}
        inside = [m for m in fresh if m.partition() in group
                  and m.offset() <= (group[m.partition()].pending_end or -1)]
        reached = {m.partition() for m in inside
                   if m.offset() == group[m.partition()].pending_end}
        if reached != set(group):  # not all of it has arrived yet: keep it and poll more
            self.carry = fresh
            return None
        taken = {(m.partition(), m.offset()) for m in inside}
        self.carry = [m for m in fresh if (m.partition(), m.offset()) not in taken]
        log.info("recovering pending batch %s on partitions %s", batch_id, sorted(group))
        return Selection(inside, batch_id, True)

    # -- 3-6. compute, intent, write, commit -----------------------------------------------
    def commit(self, state: VersionState, decoded: DecodedMessages, selection: Selection,
               retry: Any = None) -> ApplyResult | None:
        """Apply a selected, decoded batch and move its checkpoints; raises :class:`Fenced`
        (after counting it) when another owner holds one of its partitions."""
        retry = retry or (lambda fn: fn())
        attempts = [selection.recovery]

        def once() -> ApplyResult | None:
            recovery = attempts[-1]
            attempts.append(True)  # a retry after a failure mid-write is a recovery
            return self._steps(state, decoded, selection.batch_id, recovery)

        result: ApplyResult | None = retry(once)
        for p, end in decoded.ends.items():
            self.positions[p] = end + 1
            self.pending.pop(p, None)
        return result

    def _steps(self, state: VersionState, decoded: DecodedMessages, batch_id: str,
               recovery: bool) -> ApplyResult | None:
        version, ends = state.version, decoded.ends
        prepared = None
        if decoded.batch is not None:
            prepared = self.applier.prepare(state, decoded.batch, ends, batch_id, recovery)  # 3
            self._fenced_step(version, "intent", {                                         # 4
                p: [batch_id, e, prepared.spec] for p, e in ends.items()})
            t0 = time.perf_counter()
            pipe = self.store.client.pipeline(transaction=False)
            self.applier.queue_writes(prepared, pipe)                                       # 5
            pipe.execute()
            prepared.result.timings["write"] = time.perf_counter() - t0
        self._fenced_step(version, "commit", {                                              # 6
            p: [batch_id, e, f"{time.time():.3f}"] for p, e in ends.items()})
        return prepared.result if prepared is not None else None

    def _fenced_step(self, version: int, step: str, args: dict[int, list[Any]]) -> None:
        results = self.store.checkpoint_step(version, self.topic, step, self.tokens, args)
        refused = [p for p, r in results.items() if r == REFUSED]
        if refused:
            self.fenced_total += 1
            self.revoke(refused)
            raise Fenced(sorted(refused), step)
