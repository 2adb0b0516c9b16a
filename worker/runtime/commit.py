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
4. **intent**  ``pending_end``/``pending_batch`` per partition, fenced, and compared: the
               stored offset must equal this process's position, else Redis went back in
               time (:class:`Regressed`: nothing is written; the caller repositions).
5. **write**   idempotent vector, seen and index writes (one pipeline; per slot on a cluster).
6. **commit**  checkpoint ``offset = end + 1`` per partition, fenced and compared like 4,
               after every write returned (a phase of its own on a cluster); the intent
               is cleared only if it is this batch's.

Steps 5 and 6 go to Redis together, in order, on one connection (:class:`ScriptBatch`):
:meth:`CommitProtocol.start` returns once the intent is in Redis and the writes are sent, so
the worker loop consumes its next messages while Redis applies them; :meth:`finish` waits,
checks the fencing and moves the positions. The loop finishes a batch before the next one,
before any rebalance callback acts and before shutdown, so positions only ever describe
finished batches. A failure in 4-6 is retried by running 3-6 again as a recovery of the same
batch id. The retrain catch-up and the loop's one-message fallback use the synchronous
:meth:`CommitProtocol.commit`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import redis

from worker import faults
from worker.runtime.applier import (
    ApplyResult,
    BatchApplier,
    DecodedMessages,
    PreparedBatch,
    VersionState,
)
from worker.runtime.owned_users import OwnedUsers
from worker.stores.redis.script_batch import ScriptBatch
from worker.stores.redis.store import Checkpoint, RedisStore

log = logging.getLogger("online_als.commit")

#: How long a batch's before-state outlives a crash that left it pending (a backstop: a finished
#: batch's blobs are deleted with the next batch's writes). A batch pending longer than this is
#: recovered from its keys' current values, with a warning.
BEFORE_STATE_TTL_S = 7 * 24 * 3600


class StepReply(IntEnum):
    """What one fenced step of ``checkpoint.lua`` answered for one partition."""

    FENCED = 0  # another owner holds the partition
    DONE = 1
    ALREADY = 2  # this batch's commit was stored already (a batch sent again)
    REGRESSED = 3  # the stored checkpoint is behind this process's position, or its owner gone


class Fenced(RuntimeError):
    """Another owner holds these partitions now; this process must not write for them."""

    def __init__(self, partitions: list[int], step: str) -> None:
        super().__init__(f"partitions {partitions} are owned by another worker now "
                         f"({step} refused)")
        self.partitions, self.step = partitions, step


class Regressed(RuntimeError):
    """Redis went back in time under these partitions: their stored checkpoints are behind the
    positions this process applied up to (a restart from an older RDB or AOF, a promoted
    replica, a wipe). Nothing of the batch was written for them; the caller repositions at
    what Redis holds and replays Kafka from there (:meth:`CommitProtocol.reset`)."""

    def __init__(self, partitions: list[int], step: str, positions: dict[int, int]) -> None:
        super().__init__(f"redis went back in time under partitions {partitions}: their "
                         f"checkpoints are behind the positions applied "
                         f"({ {p: positions.get(p) for p in partitions} }; {step} refused)")
        self.partitions, self.step, self.positions = partitions, step, positions


@dataclass
class Selection:
    """What :meth:`CommitProtocol.select` chose to apply now."""

    messages: list[Any]
    batch_id: str
    recovery: bool


@dataclass
class InFlight:
    """A batch whose writes and commit were sent (:meth:`CommitProtocol.start`)."""

    state: VersionState
    decoded: DecodedMessages
    selection: Selection
    prepared: PreparedBatch | None
    batch: ScriptBatch
    n_writes: int  # replies before the commit steps'
    parts: list[int]  # partitions of the commit steps, in reply order
    tokens: dict[int, str]  # the owner tokens the steps were sent with
    t0: float
    replies: list[Any] | None = None  # set when run in the foreground
    dropped: list[tuple[int, str]] = field(default_factory=list)  # earlier batches' blobs


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
    regressions_total: int = 0
    # users of the held partitions kept in memory between batches (0: read them every batch)
    owned_users_max: int = 0
    owned: OwnedUsers | None = None
    # before-state blobs of finished batches, deleted with the next batch's writes
    _done_blobs: list[tuple[int, str]] = field(default_factory=list)  # (partition, batch id)
    _blob_version: int | None = None

    # -- 1. fence ------------------------------------------------------------------------
    def assign(self, version: int, partitions: list[int]) -> dict[int, int | None]:
        """Take ``partitions`` of ``version``: returns each one's start (None: never applied)."""
        # one token per assignment, so a zombie of ours is fenced too
        tokens = {p: f"{self.owner}:{uuid.uuid4().hex[:8]}" for p in partitions}
        self._forget_users()  # another owner may have written them since
        self.store.checkpoint_step(version, self.topic, "own", tokens, {p: [] for p in partitions})
        self.tokens.update(tokens)
        cps = self.store.read_checkpoints(version, self.topic, partitions)
        stale = self.store.stale_pending_before(version, self.topic, partitions,
                                                {p: cps[p].pending_batch for p in partitions})
        if stale:  # before-state a crashed owner left for batches it had committed
            batch = self.store.batch()
            self.store.queue_drop_pending_before(batch, version, self.topic, stale)
            batch.execute()
        out: dict[int, int | None] = {}
        for p in partitions:
            cp = cps[p]
            self.positions[p] = cp.offset if cp.offset is not None else 0
            if cp.has_pending:
                self.pending[p] = cp
            out[p] = cp.offset
        return out

    def revoke(self, partitions: list[int]) -> None:
        self._forget_users()
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
        """Apply a selected, decoded batch and move its checkpoints, all before returning;
        raises :class:`Fenced` (after counting it) when another owner holds one of its
        partitions."""
        return self.finish(self.start(state, decoded, selection, retry, background=False), retry)

    def start(self, state: VersionState, decoded: DecodedMessages, selection: Selection,
              retry: Any = None, background: bool = True) -> InFlight:
        """Steps 3-5 and the sending of 6. The intent is in Redis before this returns; the
        writes and the commit go out together on their own connection, in the background
        unless ``background`` is False, so the caller can consume its next messages while
        Redis applies them. :meth:`finish` waits for them."""
        retry = retry or (lambda fn: fn())
        attempts = [selection.recovery]

        def once() -> InFlight:
            recovery = attempts[-1]
            attempts.append(True)  # a retry after a failure mid-write is a recovery
            return self._send(state, decoded, selection, recovery, background)

        flight: InFlight = retry(once)
        return flight

    def finish(self, flight: InFlight, retry: Any = None) -> ApplyResult | None:
        """Wait for a started batch; if Redis failed under it, apply it again as a recovery
        (idempotent), synchronously. Then move the positions."""
        try:
            result = self._complete(flight)
        except (redis.ConnectionError, redis.TimeoutError):
            if retry is None:
                raise
            log.warning("batch %s: redis failed while its writes were in flight; applying it "
                        "again as a recovery", flight.selection.batch_id)

            def again() -> ApplyResult | None:
                return self._complete(self._send(flight.state, flight.decoded, flight.selection,
                                                 True, False))

            result = retry(again)
        for p, end in flight.decoded.ends.items():
            self.positions[p] = end + 1
            self.pending.pop(p, None)
        if self.owned is not None and flight.prepared is not None:
            flight.prepared.keep_users(self.owned)  # committed: this is what Redis holds
        gone = set(flight.dropped)
        self._done_blobs = [k for k in self._done_blobs if k not in gone]
        if flight.prepared is not None:
            if self._blob_version != flight.state.version:
                self._done_blobs, self._blob_version = [], flight.state.version
            self._done_blobs += [(p, flight.selection.batch_id) for p in flight.prepared.before]
        return result

    def drop_finished_blobs(self) -> None:
        """Delete the last finished batch's before-state now (at shutdown; otherwise the next
        batch's writes do it)."""
        if self._done_blobs and self._blob_version is not None:
            batch = self.store.batch()
            self.store.queue_drop_pending_before(batch, self._blob_version, self.topic,
                                                 self._done_blobs)
            batch.execute()
            self._done_blobs = []

    def _owned_for(self, state: VersionState) -> OwnedUsers | None:
        if self.owned_users_max <= 0:
            return None
        rank = state.meta.rank
        widths = self.applier.aux_widths(rank) if state.meta.mode == "explicit" else None
        aux = widths[0] if widths else 0
        if (self.owned is None or self.owned.version != state.version
                or self.owned.rank != rank or self.owned.aux_width != aux):
            self.owned = OwnedUsers(rank, aux, self.owned_users_max, state.version)
        return self.owned

    def _forget_users(self) -> None:
        if self.owned is not None:
            self.owned.clear()

    def _send(self, state: VersionState, decoded: DecodedMessages, selection: Selection,
              recovery: bool, background: bool) -> InFlight:
        version, ends, batch_id = state.version, decoded.ends, selection.batch_id
        prepared = None
        batch = self.store.batch()
        t0 = time.perf_counter()
        if decoded.batch is not None:
            prepared = self.applier.prepare(state, decoded.batch, ends, batch_id, recovery,  # 3
                                            self._owned_for(state))
            self._fenced_step(version, "intent", {                                         # 4
                p: [batch_id, e, prepared.spec, self.positions[p]] for p, e in ends.items()},
                before=prepared.before, batch_id=batch_id)
            faults.reached("after_intent")
            t0 = time.perf_counter()
            self.applier.queue_writes(prepared, batch)                                      # 5
        # the last finished batch's before-state (of this version: another's goes with it)
        dropped = list(self._done_blobs) if self._blob_version == version else []
        self.store.queue_drop_pending_before(batch, version, self.topic, dropped)
        n_writes = len(batch)
        batch.barrier()  # on a cluster the checkpoints go only after every write returned
        parts = self._queue_commit(batch, version, batch_id, ends)                          # 6
        flight = InFlight(state, decoded, selection, prepared, batch, n_writes, parts,
                          dict(self.tokens), t0, dropped=dropped)
        if background:
            batch.start()
        else:
            flight.replies = batch.execute()
        return flight

    def _queue_commit(self, batch: ScriptBatch, version: int, batch_id: str,
                      ends: dict[int, int]) -> list[int]:
        """Queue step 6 behind the writes on ``batch``; the partitions in reply order."""
        return self.store.queue_checkpoint_step(batch, version, self.topic, "commit", self.tokens,
                                                {p: [batch_id, e, f"{time.time():.3f}",
                                                     self.positions[p]]
                                                 for p, e in ends.items()})

    def _complete(self, flight: InFlight) -> ApplyResult | None:
        replies = flight.replies if flight.replies is not None else flight.batch.result()
        faults.reached("after_commit")
        if flight.prepared is not None:
            flight.prepared.result.timings["write"] = time.perf_counter() - flight.t0
        results = dict(zip(flight.parts, (StepReply(int(r)) for r in replies[flight.n_writes:]),
                           strict=True))
        # only a refusal of the token this batch used counts: a partition lost and taken
        # again since then has a new token, and its new assignment recovers from the intent
        self._check("commit", {p: r for p, r in results.items()
                               if self.tokens.get(p) == flight.tokens.get(p)})
        return flight.prepared.result if flight.prepared is not None else None

    def _fenced_step(self, version: int, step: str, args: dict[int, list[Any]],
                     before: dict[int, bytes] | None = None, batch_id: str = "") -> None:
        """One fenced step on every partition of ``args``; an intent's before-state blobs go
        in the same send, ahead of it (they are keyed by batch id, so a refused intent's
        blobs are only garbage, which their TTL removes)."""
        batch = self.store.batch()
        if before:
            self.store.queue_pending_before(batch, version, self.topic, batch_id, before,
                                            BEFORE_STATE_TTL_S)
        n = len(batch)
        parts = self.store.queue_checkpoint_step(batch, version, self.topic, step, self.tokens,
                                                 args)
        replies = batch.execute()[n:]
        self._check(step, {p: StepReply(int(r)) for p, r in zip(parts, replies, strict=True)})

    def _check(self, step: str, results: dict[int, StepReply]) -> None:
        """Raise for refused partitions: :class:`Regressed` first (a regression explains a
        foreign owner too: the owner field went back with the rest), then :class:`Fenced`."""
        regressed = sorted(p for p, r in results.items() if r is StepReply.REGRESSED)
        if regressed:
            self.regressions_total += 1
            raise Regressed(regressed, step, dict(self.positions))
        refused = sorted(p for p, r in results.items() if r is StepReply.FENCED)
        if refused:
            self.fenced_total += 1
            self.revoke(refused)
            raise Fenced(refused, step)
