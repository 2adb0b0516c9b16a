"""The retrain quality gate as pure functions: score the serving model and the candidate on the
same holdout, then promote only a candidate that is not worse by more than a margin.

Both models come as :class:`~online_als.factors.ModelArrays` (what a version holds, with the
adaptive learner's per-entity state when it has it). Scoring never mutates them.

- Explicit ratings: :func:`score_explicit`. With ``params`` (the online learner's settings) the
  holdout is *replayed*, predict then learn, through the online kernel from a copy of each
  model, so both are scored as they would serve with the online updates of the holdout
  included (prequential RMSE/MAE). Without ``params`` it is a static score of the arrays.
- Implicit feedback: :func:`score_ranking`, NDCG@k / recall@k of each model's top-k for the
  same sample of holdout users, excluding the items each user had before the holdout.
- :func:`gate_decision` compares two score dicts and says why (a :class:`Verdict`): a score
  that is missing, NaN or of another metric is never a pass, only "nothing serves at all" is;
  :func:`gate_reason` is its reason alone; :func:`compare_on_holdout` does it all.
- :func:`holdout_sizes`: how many of each partition's last events the gate holds out (the
  product's rule and ``bench_rebase.py``'s default).
- :func:`staged_reason`: a two-stage gate. A candidate that passed the holdout is replayed in
  shadow beside the serving model on the events that follow (both learning them, only the
  serving model answering) and switched to only if it is not worse there either.

>>> from online_als.factors import Factors, ModelArrays
>>> items = Factors(["a", "b"], np.eye(2), np.zeros(2))
>>> ser = ModelArrays("explicit", Factors(["u"], np.ones((1, 2)), [0]), items, 3.0)
>>> bad = ModelArrays("explicit", Factors(["u"], -np.ones((1, 2)), [0]), items, 3.0)
>>> from online_als.ratings import Ratings
>>> h = Ratings.from_columns(["u", "u"], ["a", "b"], [4.0, 4.0])
>>> res = compare_on_holdout("explicit", ser, bad, h, margin=0.02)
>>> res.promote, res.serving["rmse"], res.candidate["rmse"]
(False, 0.0, 2.0)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from online_als.evaluation._arrays import split_by_group
from online_als.evaluation.metrics import ranking_metrics_at_k
from online_als.evaluation.prequential import prequential
from online_als.factors import ModelArrays
from online_als.ratings import Ratings

__all__ = ["GateDecision", "GateResult", "Verdict", "compare_on_holdout", "gate_decision",
           "gate_reason", "holdout_sizes", "score_explicit", "score_ranking",
           "staged_reason"]  # fmt: skip

#: Metric the gate compares, and whether lower is better, per mode.
GATE_METRIC = {"explicit": ("rmse", True), "implicit": ("ndcg_at_10", False)}


class Verdict(enum.Enum):
    """What the gate found. Only the first three let a candidate through: a gate that cannot
    check (a score missing, NaN, or of another metric or mode) refuses, it never waves through.
    """

    PASSED = "passed"  # scored with the serving model on the same holdout, within the margin
    PASSED_OLDER_HOLDOUT = "passed_older_holdout"  # only the serving's stored score to go by
    NO_SERVING_MODEL = "no_serving_model"  # nothing serves anywhere: the first model
    WORSE = "worse"  # worse than the serving model by more than the margin
    NO_CANDIDATE_SCORE = "no_candidate_score"  # empty holdout, nothing known, or NaN
    NO_SERVING_SCORE = "no_serving_score"  # a model serves, but it has no finite score
    INCOMPARABLE = "incomparable"  # the scores are of different metrics or modes

    @property
    def promotes(self) -> bool:
        return self in (Verdict.PASSED, Verdict.PASSED_OLDER_HOLDOUT, Verdict.NO_SERVING_MODEL)


@dataclass(frozen=True)
class GateDecision:
    """A :class:`Verdict` and the sentence that explains it (filled for every verdict, so a
    promotion without a comparison says so too)."""

    verdict: Verdict
    detail: str

    @property
    def promote(self) -> bool:
        return self.verdict.promotes

    @property
    def reason(self) -> str:
        """'' when the candidate may be promoted, else why not."""
        return "" if self.promote else self.detail


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str
    serving: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    verdict: Verdict = Verdict.PASSED


def _errors(pred: NDArray[Any], values: NDArray[Any]) -> dict[str, float]:
    err = pred.astype(np.float64) - values.astype(np.float64)
    err = err[np.isfinite(err)]
    if not err.size:
        return {}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
            "n": float(err.size)}  # fmt: skip


def score_explicit(
    model: ModelArrays, holdout: Ratings, *, params: Any = None,
    rating_range: tuple[float, float] = (0.5, 5.0), batch: int = 1000,
) -> dict[str, float]:  # fmt: skip
    """RMSE/MAE of ``model`` on the holdout (in stream order), predictions clipped.

    ``params``: an :class:`~online_als.online.ExplicitParams` (plain SGD) or
    :class:`~online_als.adaptive.AdaptiveParams` replays the holdout through that online
    learner from a copy of the model (prequential), at the holdout's own event times (the
    adaptive learner's sessions follow them); None scores the arrays as they are.
    """
    v = holdout.values
    if not v.size:
        return {}
    state = model.state()
    if params is None:
        u = state.users.rows_for(holdout.user_ids, add=False)
        i = state.items.rows_for(holdout.item_ids, add=False)
        ku, ki = u >= 0, i >= 0
        dot = np.zeros(len(v))
        both = ku & ki
        dot[both] = np.einsum("ij,ij->i", state.user_factors[u[both]].astype(np.float64),
                              state.item_factors[i[both]].astype(np.float64))  # fmt: skip
        pred = state.global_mean + np.where(ku, state.user_bias[np.maximum(u, 0)], 0.0) + np.where(
            ki, state.item_bias[np.maximum(i, 0)], 0.0) + dot
        return _errors(np.clip(pred, *rating_range), v)
    learner = _learner(state, params, model)
    res = prequential(learner, holdout, batch, rating_range=rating_range)
    return {"rmse": res.rmse, "mae": res.mae, "n": float(res.n_scored)}


def _learner(state: Any, params: Any, model: ModelArrays) -> Any:
    from online_als.adaptive import AdaptiveModel, AdaptiveParams
    from online_als.online import OnlineModel

    if isinstance(params, AdaptiveParams):
        return AdaptiveModel.from_state(state, params, model.users.aux, model.items.aux)
    state.hyper = {}
    return OnlineModel(state, params)


def score_ranking(
    model: ModelArrays, holdout: Ratings, *, seen_users: ArrayLike, seen_items: ArrayLike, eval_users: ArrayLike | None = None,
    k: int = 10, max_users: int = 5000, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """NDCG@k and recall@k of ``model``'s top-k on the holdout's positive events.

    ``(seen_users, seen_items)``: the (user id, item id) pairs before the holdout, excluded
    from every list. ``eval_users``: the user ids to score (pass the same to both models);
    default: up to ``max_users`` holdout users with a positive value, a seeded sample.
    A user the model does not know gets an empty list (it scores 0).
    """
    from online_als.serving.topn import top_n_batch

    hu, hi = holdout.user_ids.astype(str), holdout.item_ids.astype(str)
    pos = holdout.values > 0
    hu, hi = hu[pos], hi[pos]
    eu = _sample(hu, max_users, seed) if eval_users is None else np.unique(
        np.asarray(eval_users).astype(str))
    if not eu.size:
        return {}
    keep = np.isin(hu, eu)
    vocab = np.unique(hi[keep])  # relevant item ids -> codes; anything else is never a hit
    relevant = split_by_group(np.searchsorted(eu, hu[keep]), np.searchsorted(vocab, hi[keep]),
                              len(eu))  # fmt: skip
    su, si = np.asarray(seen_users).astype(str), np.asarray(seen_items).astype(str)
    sk = np.isin(su, eu)
    seen = split_by_group(np.searchsorted(eu, su[sk]), si[sk], len(eu))
    state = model.state()
    rows = state.users.rows_for(eu, add=False)
    known = np.flatnonzero(rows >= 0)
    recs = np.full((len(eu), k), "", dtype=object)
    if known.size:
        excl = [state.items.rows_for(seen[j], add=False) for j in known]
        top, _ = top_n_batch(np.ascontiguousarray(state.user_factors[rows[known]]),
                             np.ascontiguousarray(state.item_factors), k,
                             exclude=[e[e >= 0] for e in excl])  # fmt: skip
        ids = np.asarray(state.items.ids, dtype=object)
        recs[known] = np.where(top >= 0, ids[np.maximum(top, 0)], "")
    recs_s = recs.astype(str)
    codes = np.minimum(np.searchsorted(vocab, recs_s), max(len(vocab) - 1, 0))
    hit = (recs_s != "") & (vocab[codes] == recs_s) if vocab.size else np.zeros(recs.shape, bool)
    m = ranking_metrics_at_k(np.where(hit, codes, -1 - np.arange(k)), relevant, k=k)
    return {f"ndcg_at_{k}": float(m["ndcg"]), f"recall_at_{k}": float(m["recall"]),
            "n_users": float(len(eu))}  # fmt: skip


def _finite(scores: Mapping[str, float], key: str) -> bool:
    value = scores.get(key)
    return value is not None and bool(np.isfinite(value))


def gate_decision(mode: str, serving: Mapping[str, float] | None,
                  candidate: Mapping[str, float], margin: float,
                  holdout: str = "the same holdout") -> GateDecision:  # fmt: skip
    """Compare the candidate's scores with the serving model's (``margin``: the relative
    worsening allowed, 0.02 = 2%). ``serving`` None: no model serves, so there is nothing to
    compare with and the candidate passes (:attr:`Verdict.NO_SERVING_MODEL`); an empty or NaN
    serving score is a model that cannot be checked against, and refuses. ``holdout`` names
    what the serving score was measured on, for the sentence.

    >>> gate_decision("explicit", {"rmse": float("nan")}, {"rmse": 0.9}, 0.0).verdict
    <Verdict.NO_SERVING_SCORE: 'no_serving_score'>
    >>> gate_decision("explicit", {"ndcg_at_10": 0.2}, {"rmse": 0.9}, 0.0).verdict
    <Verdict.INCOMPARABLE: 'incomparable'>
    >>> gate_decision("explicit", None, {"rmse": 0.9}, 0.0).promote
    True
    """
    key, lower_better = GATE_METRIC[mode]
    if not _finite(candidate, key):
        got = candidate.get(key)
        what = f"no {key}" if got is None else f"{key} = {got}"
        return GateDecision(Verdict.NO_CANDIDATE_SCORE,
                            f"the candidate has {what} on the holdout (nothing held out, or "
                            f"nothing in it the candidate knows): it cannot be checked")
    if serving is None:
        return GateDecision(Verdict.NO_SERVING_MODEL, "no model serves yet: nothing to compare "
                                                      "the candidate with")
    if not _finite(serving, key):
        got = serving.get(key)
        if got is None and any(k in serving for k, _ in GATE_METRIC.values()):
            return GateDecision(Verdict.INCOMPARABLE,
                                f"the serving model's scores on {holdout} ({', '.join(sorted(serving))}) "
                                f"do not include {key}, the candidate's: they cannot be compared")
        what = f"no {key}" if got is None else f"{key} = {got}"
        return GateDecision(Verdict.NO_SERVING_SCORE,
                            f"the serving model has {what} on {holdout}: the candidate cannot "
                            f"be checked against it")
    base, new = float(serving[key]), float(candidate[key])
    diff = new - base if lower_better else base - new
    worse = diff / abs(base) if base != 0 else (np.inf if diff > 0 else 0.0)
    text = (f"{key} {new:.4f} is {abs(worse):.1%} {'worse' if worse > 0 else 'better'} than the "
            f"serving model's {base:.4f} on {holdout} (margin {margin:.1%})")
    if worse > margin:
        return GateDecision(Verdict.WORSE, text)
    same = holdout == "the same holdout"
    return GateDecision(Verdict.PASSED if same else Verdict.PASSED_OLDER_HOLDOUT, text)


def gate_reason(mode: str, serving: dict[str, float], candidate: dict[str, float],
                margin: float) -> str:  # fmt: skip
    """'' when the candidate may be promoted, else why not (:func:`gate_decision`; an empty
    ``serving`` means no model serves)."""
    return gate_decision(mode, serving or None, candidate, margin).reason


def holdout_sizes(counts: Mapping[int, int], fraction: float, min_events: int) -> dict[int, int]:
    """Events held out at the end of each partition (``counts``: events per partition).

    Each partition gives the larger of ``fraction`` of its events and its share (by size) of
    ``min_events`` in all, the minimum never taking more than half the log, so the fit keeps at
    least as much as it is judged on. The minimum exists because a holdout of ~2,000 events
    let through candidates that hurt afterwards on ml-latest-small, where 5,000 did not
    (benchmarks/RESULTS.md, issue 13 rebase). ``min_events=0``: the fraction alone.

    >>> holdout_sizes({0: 100_000}, 0.02, 5000), holdout_sizes({0: 6000, 1: 2000}, 0.02, 5000)
    ({0: 5000}, {0: 3000, 1: 1000})
    >>> holdout_sizes({0: 20_000_000}, 0.02, 5000)
    {0: 400000}
    """
    total = sum(counts.values())
    floor = min(min_events, total // 2)
    return {p: int(max(np.ceil(c * fraction), np.ceil(c * floor / total) if total else 0))
            for p, c in counts.items()}  # fmt: skip


def staged_reason(
    mode: str, holdout: tuple[dict[str, float], dict[str, float]],
    shadow: tuple[dict[str, float], dict[str, float]] | None, margin: float,
) -> str:  # fmt: skip
    """'' when the candidate may be switched to, else why not: ``holdout`` and ``shadow`` are
    (serving, candidate) scores on the holdout and on the shadow replay after it (None: the
    replay has not been run, so only the holdout decides). Both must pass :func:`gate_reason`.

    >>> print(staged_reason("explicit", ({"rmse": 1.0}, {"rmse": 0.9}),
    ...                     ({"rmse": 1.0}, {"rmse": 1.1}), 0.0))
    shadow replay: rmse 1.1000 is 10.0% worse than the serving model's 1.0000 on the same holdout (margin 0.0%)
    >>> staged_reason("explicit", ({"rmse": 1.0}, {"rmse": 0.9}), None, 0.0)
    ''
    """
    reason = gate_reason(mode, *holdout, margin)
    if reason:
        return f"holdout: {reason}"
    if shadow is None:
        return ""
    reason = gate_reason(mode, *shadow, margin)
    return f"shadow replay: {reason}" if reason else ""


def compare_on_holdout(
    mode: str, serving: ModelArrays | None, candidate: ModelArrays, holdout: Ratings, *,
    margin: float = 0.02, **score_kw: Any,
) -> GateResult:  # fmt: skip
    """Score both models on the same holdout and decide (see the module docstring).
    ``score_kw`` go to :func:`score_explicit` or :func:`score_ranking`."""
    if mode == "implicit" and "eval_users" not in score_kw:
        pos = holdout.values > 0
        score_kw["eval_users"] = _sample(holdout.user_ids.astype(str)[pos],
                                         score_kw.pop("max_users", 5000), score_kw.get("seed", 0))
    score = score_explicit if mode == "explicit" else score_ranking
    cand = score(candidate, holdout, **score_kw)
    base = score(serving, holdout, **score_kw) if serving is not None else None
    decision = gate_decision(mode, base, cand, margin)
    return GateResult(decision.promote, decision.reason, base or {}, cand, decision.verdict)


def _sample(users: NDArray[Any], max_users: int, seed: int) -> NDArray[Any]:
    eu = np.unique(users)
    if len(eu) > max_users:
        eu = np.sort(eu[np.random.default_rng(seed).choice(len(eu), max_users, replace=False)])
    return eu
