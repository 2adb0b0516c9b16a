"""What the retrain job's quality gate compares a candidate with, and when it refuses.

The scores come from :mod:`online_als.evaluation.gate`; this module decides what the serving
side is (:func:`serving_reference`: the version Redis serves, rebuilt from Cassandra as of the
holdout boundary, or else only its score stored from its own, older holdout) and turns both
into one :class:`~online_als.evaluation.gate.GateDecision` (:func:`decide`).

The rule an auditor can read: a candidate passes only when it was compared and was not worse
than the margin allows, or when nothing serves anywhere. Every score that is missing, NaN or of
another metric or mode, and a serving version that can neither be rebuilt nor has a stored
score, rejects it with that sentence as the recorded reason (``docs/retrain.md`` has the table).
``online-als retrain --force-promote`` promotes such a candidate anyway, and records that it did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from online_als.evaluation.gate import GateDecision, Verdict, gate_decision
from worker.config import Settings

log = logging.getLogger("online_als.retrain")
OLDER_HOLDOUT = "an older holdout (its own, stored when it was trained)"


@dataclass(frozen=True)
class ServingReference:
    """The serving side as the gate sees it at the holdout boundary."""

    version: int | None  # the version Redis serves (None: none)
    recorded: int | None = None  # with no Redis version: the one Cassandra records as serving
    mode: str | None = None  # the serving version's mode, when known
    arrays: Any = None  # ModelArrays as of the boundary; None when not rebuilt
    params: Any = None  # the online learner's params, for the replay
    why_not: str = ""  # why it was not rebuilt
    stored: dict[str, float] = field(default_factory=dict)  # its metrics from its own holdout


def serving_reference(settings: Settings, cass: Any, store: Any, current: int | None,
                      cur_meta: Any, boundary: dict[int, int]) -> ServingReference:
    """The serving version and, when it can be rebuilt as of ``boundary`` (its snapshot plus
    the log, online updates included), its arrays; a version of another mode is not rebuilt
    (its scores could not be compared anyway)."""
    from worker.control.lifecycle import serving_version

    if current is None:
        return ServingReference(None, recorded=serving_version(cass))
    stored = dict(cur_meta.metrics) if cur_meta is not None else {}
    mode = cur_meta.mode if cur_meta is not None else None
    if mode is None:
        meta = store.read_meta(current)
        mode = meta.mode if meta is not None else None
    if mode is not None and mode != settings.model.mode:
        return ServingReference(current, mode=mode, stored=stored)
    from worker.control.materialize import materialize_at

    try:
        mat = materialize_at(cass, settings, current, boundary)
    except LookupError as exc:
        log.warning("gate: the serving version cannot be rebuilt at the boundary (%s)", exc)
        return ServingReference(current, mode=mode, why_not=str(exc), stored=stored)
    return ServingReference(current, mode=mode, arrays=mat.arrays(), params=mat.model.params,
                            stored=stored)


def decide(mode: str, scores: dict[str, float], ref: ServingReference,
           margin: float) -> GateDecision:
    """The gate's decision on the candidate's ``scores`` (the retrain's ``_evaluate``: with a
    rebuilt serving model they hold its scores on the same holdout as ``serving_<metric>``)."""
    if ref.version is None:
        if ref.recorded is not None:
            return GateDecision(Verdict.NO_SERVING_SCORE, (
                f"Redis serves no version while Cassandra records version {ref.recorded} as "
                "serving (Redis lost its state?): restore it (`online-als restore`) so the "
                "candidate can be checked against it"))
        return gate_decision(mode, None, scores, margin)
    if ref.mode is not None and ref.mode != mode:
        return GateDecision(Verdict.INCOMPARABLE, (
            f"the serving version {ref.version} is a {ref.mode} model and the candidate "
            f"{mode}: their scores cannot be compared"))
    if ref.arrays is not None:
        serving = {k[len("serving_"):]: v for k, v in scores.items() if k.startswith("serving_")}
        own = {k: v for k, v in scores.items() if not k.startswith("serving_")}
        return gate_decision(mode, serving, own, margin)
    decision = gate_decision(mode, ref.stored, scores, margin, holdout=OLDER_HOLDOUT)
    if decision.verdict is Verdict.NO_SERVING_SCORE and not ref.stored:
        return GateDecision(Verdict.NO_SERVING_SCORE, (
            f"the serving version {ref.version} cannot be rebuilt at the holdout boundary "
            f"({ref.why_not}) and has no stored score: the candidate cannot be checked"))
    return decision
