"""Rebase benchmark (issue 13): online only vs online + periodic gated ALS-WR retrain vs
retrain only, prequential RMSE over the whole stream, in memory (library path, no servers).

Every learner predicts each rating before learning it, in time order, batches of ``--batch``,
predictions clipped to the rating range. The online learner is the shipped default
(:class:`online_als.adaptive.AdaptiveModel` with :mod:`online_als.defaults`).

- **online only**: the adaptive learner, never retrained.
- **online + retrain**: every ``--every`` events, ALS-WR (k = the online rank) is fitted on
  every rating before a boundary H events back. By default H and the margin follow the product's
  shipped rule (``worker.config.RetrainSettings``: ``holdout_fraction`` of the events seen, at
  least ``holdout_min_events``, never more than half; ``gate_margin``; the same
  ``online_als.evaluation.gate.holdout_sizes`` the retrain job uses), rounded up to whole
  batches; ``--holdout N`` fixes H instead. The gate replays those last H events, predict then
  learn, through (a) a copy of the online model as it was at the boundary and (b) the candidate
  rebased on the retrain (AdaGrad sums kept, see ``AdaptiveModel.rebased``), and promotes (b)
  only when its RMSE is not worse than (a)'s by more than ``--margin``. A promoted candidate has replayed the holdout, so it is caught up.
  With ``--shadow N`` a candidate that passed is not switched to at once: for the next N events
  it is replayed in shadow beside the serving model (both learn them, the serving model answers)
  and the switch happens only if it is not worse there either
  (:func:`online_als.evaluation.gate.staged_reason`).
- **retrain only**: ALS-WR on everything seen, every ``--every`` events; between retrains the
  static model predicts (the global mean and the item/user means of ids it does not know: 0).

Writes ``benchmarks/plots/rebase_prequential_rmse.png``.

    python benchmarks/bench_rebase.py                 # the product's shipped gate rule
    python benchmarks/bench_rebase.py --holdout 2000  # a fixed 2,000-event holdout
    python benchmarks/bench_rebase.py --quick
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, cast

import _common as C
import numpy as np

from online_als import defaults as D
from online_als.adaptive import AdaptiveModel
from online_als.datasets import (
    MovieLensNotFoundError,
    Ratings,
    concat,
    load_ml_latest_small,
    load_movielens_100k,
)
from online_als.evaluation import PrequentialResult, prequential
from online_als.evaluation.gate import holdout_sizes, staged_reason
from online_als.model import ModelState
from online_als.retrain import AlsWrParams, build_matrix, retrain
from worker.config import RetrainSettings


def fit_als(seen: list[Ratings], params: AlsWrParams) -> ModelState:
    past = concat(seen)
    matrix = build_matrix([past], "last")
    state = retrain("explicit", matrix, params).to_state(seed=D.SEED)
    state.user_init_scale = state.item_init_scale = D.INIT_SCALE
    return state


def _rmse(pred: np.ndarray, values: np.ndarray, rng: tuple[float, float]) -> float:
    err = np.clip(pred.astype(np.float64), *rng) - values
    return float(np.sqrt(np.mean(err**2)))


class GatedRetrain:
    """Online adaptive learner + periodic ALS-WR retrain behind a same-holdout gate."""

    wants_timestamps = True

    def __init__(self, als: AlsWrParams, every: int, holdout: Callable[[int], int],
                 margin: float, rng: tuple[float, float], shadow: int = 0) -> None:  # fmt: skip
        self.model = AdaptiveModel()
        self.als, self.every, self.margin, self.rng = als, every, margin, rng
        self.holdout_for = holdout  # events seen at the retrain -> events held out
        self.holdout = 0
        self.shadow_events = shadow
        self.shadow: AdaptiveModel | None = None  # a candidate replayed beside the serving one
        self.shadow_log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.holdout_scores: tuple[dict[str, float], dict[str, float]] | None = None
        self.seen: list[Ratings] = []
        self.n_seen = 0
        self.snapshot: AdaptiveModel | None = None  # the online model at the next boundary
        self.log: list[dict[str, Any]] = []
        self.retrain_seconds = 0.0

    def learn_batch(self, users: np.ndarray, items: np.ndarray, values: np.ndarray,
                    timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        next_retrain = (self.n_seen // self.every + 1) * self.every
        if self.n_seen == next_retrain - self.holdout_for(next_retrain):  # main() aligns batches with it
            self.snapshot = copy.deepcopy(self.model)
        out = self.model.learn_batch(users, items, values, timestamps)
        if self.shadow is not None:
            cand, _ = self.shadow.learn_batch(users, items, values, timestamps)
            self.shadow_log.append((out[0], cand, values))
            if sum(len(v) for *_, v in self.shadow_log) >= self.shadow_events:
                self._end_shadow()
        self.seen.append(Ratings.from_columns(users, items, values, timestamps))
        self.n_seen += len(values)
        if self.n_seen >= next_retrain and self.snapshot is not None:
            self._retrain()
        return out

    def _retrain(self) -> None:
        t0 = time.perf_counter()
        assert self.snapshot is not None
        stream = concat(self.seen)
        self.holdout = self.holdout_for(len(stream))
        cut = len(stream) - self.holdout
        hold = stream.slice(cut, len(stream))
        cand = self.snapshot.rebased(fit_als([stream.slice(0, cut)], self.als))
        scores = {}
        for name, learner in (("serving", self.snapshot), ("candidate", cand)):
            pred, _ = learner.learn_batch(hold.user_ids, hold.item_ids, hold.values,
                                          hold.timestamps)  # fmt: skip
            scores[name] = _rmse(pred, hold.values, self.rng)
        holdout = ({"rmse": scores["serving"]}, {"rmse": scores["candidate"]})
        promote = not staged_reason("explicit", holdout, None, self.margin)
        self.snapshot = None
        self.retrain_seconds += time.perf_counter() - t0
        self.log.append({"at": self.n_seen, "holdout": self.holdout, **scores,
                         "promoted": promote and not self.shadow_events})  # fmt: skip
        if promote and self.shadow_events:  # replay it beside the serving model first
            self.shadow, self.shadow_log, self.holdout_scores = cand, [], holdout
        elif promote:
            self.model = cand

    def _end_shadow(self) -> None:
        assert self.shadow is not None and self.holdout_scores is not None
        serving, cand, values = (np.concatenate(x) for x in zip(*self.shadow_log, strict=True))
        shadow = ({"rmse": _rmse(serving, values, self.rng)}, {"rmse": _rmse(cand, values, self.rng)})
        promote = not staged_reason("explicit", self.holdout_scores, shadow, self.margin)
        if promote:
            self.model = self.shadow  # it learnt every event meanwhile: caught up
        self.log[-1].update(shadow_serving=shadow[0]["rmse"], shadow_candidate=shadow[1]["rmse"],
                            promoted=promote)  # fmt: skip
        self.shadow, self.shadow_log, self.holdout_scores = None, [], None


class RetrainOnly:
    """ALS-WR every ``every`` events on all seen; the static model predicts in between."""

    def __init__(self, als: AlsWrParams, every: int) -> None:
        self.als, self.every = als, every
        self.state: ModelState | None = None
        self.seen: list[Ratings] = []
        self.n_seen, self.total = 0, 0.0

    def learn_batch(self, users: np.ndarray, items: np.ndarray,
                    values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        s = self.state
        if s is None:
            pred = np.full(len(values), self.total / self.n_seen if self.n_seen else D.GLOBAL_MEAN)
        else:
            u = s.users.rows_for(users, add=False)
            i = s.items.rows_for(items, add=False)
            ku, ki = u >= 0, i >= 0
            both = ku & ki
            dot = np.zeros(len(values))
            dot[both] = np.einsum("ij,ij->i", s.user_factors[u[both]], s.item_factors[i[both]])
            pred = (s.global_mean + np.where(ku, s.user_bias[np.maximum(u, 0)], 0.0)
                    + np.where(ki, s.item_bias[np.maximum(i, 0)], 0.0) + dot)  # fmt: skip
        self.seen.append(Ratings.from_columns(users, items, values))
        before = self.n_seen
        self.n_seen += len(values)
        self.total += float(np.sum(values))
        if self.n_seen // self.every > before // self.every:
            self.state = fit_als(self.seen, self.als)
        return pred.astype(np.float32), np.ones(len(values), np.uint8)


def plot(curves: dict[str, list[tuple[str, PrequentialResult]]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5))
    for ax, (data, runs) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for name, res in runs:
            ax.plot(res.n_seen, res.running_rmse, label=f"{name} ({res.rmse:.4f})")
        ax.set(title=data, xlabel="ratings seen", ylabel="running prequential RMSE")
        lo = min(float(np.nanmin(r.running_rmse[len(r.running_rmse) // 5 :])) for _, r in runs)
        ax.set_ylim(lo - 0.02, lo + 0.25)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Online only vs online + gated ALS-WR retrain vs retrain only (time order)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--every", type=int, default=10_000, help="events between retrains")
    shipped = RetrainSettings()
    p.add_argument("--holdout", type=int, default=None,
                   help="a fixed number of events the gate replays (default: the product's rule, "
                        "--holdout-fraction of the events seen, at least --holdout-min)")
    p.add_argument("--holdout-fraction", type=float, default=shipped.holdout_fraction)
    p.add_argument("--holdout-min", type=int, default=shipped.holdout_min_events)
    p.add_argument("--margin", type=float, default=shipped.gate_margin,
                   help="relative worsening allowed (default: retrain.gate_margin)")
    p.add_argument("--shadow", type=int, default=0,
                   help="events a passing candidate is replayed beside the serving model before "
                        "the switch (0: switch at once)")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--batch", type=int, default=D.EVAL_BATCH)
    p.add_argument("--plot", type=C.Path, default=C.PLOT_DIR / "rebase_prequential_rmse.png")
    a = p.parse_args(argv)
    info = C.header("bench_rebase: online only vs online + gated retrain vs retrain only", a)
    try:
        sets = [("ML-100K", load_movielens_100k().sort_by_time(), (1.0, 5.0)),
                ("ml-latest-small", load_ml_latest_small().sort_by_time(), (0.5, 5.0))]  # fmt: skip
    except MovieLensNotFoundError as exc:
        C.exit_no_data(exc)
    if a.quick:
        sets = [(n, d.slice(0, 6000), r) for n, d, r in sets]
        a.every, a.holdout, a.iterations = 2000, 1000, 2

    def holdout_for(n_seen: int) -> int:
        if a.holdout is not None:
            return int(a.holdout)
        h = holdout_sizes({0: n_seen}, a.holdout_fraction, a.holdout_min)[0]
        return -(-h // a.batch) * a.batch  # whole batches: the snapshot falls between two

    n_max = max(len(d) for _, d, _ in sets)
    sizes = {holdout_for(n) for n in range(a.every, n_max + 1, a.every)}
    if a.every % a.batch or any(h % a.batch or not 0 < h < a.every for h in sizes):
        p.error(f"--every and the holdout ({sorted(sizes)}) must be multiples of --batch, with "
                "0 < holdout < every")
    if a.shadow % a.batch or not 0 <= a.shadow <= a.every - max(sizes):
        p.error("--shadow must be a multiple of --batch in [0, every - holdout]")
    rule = (f"{a.holdout:,}" if a.holdout is not None else
            f"max({a.holdout_fraction:g} x seen, min({a.holdout_min:,}, seen / 2)) = "
            f"{'/'.join(f'{h:,}' for h in sorted(sizes))}")
    als = AlsWrParams(factors=D.RANK, reg=0.12, reg_bias=0.05, iterations=a.iterations, seed=0)
    rows, curves, logs = [], {}, {}
    for name, data, rng in sets:
        t0 = time.perf_counter()
        online = prequential(AdaptiveModel(), data, a.batch, rating_range=rng)
        gated_learner = GatedRetrain(als, a.every, holdout_for, a.margin, rng, a.shadow)
        gated = prequential(cast(Any, gated_learner), data, a.batch, rating_range=rng)
        only = prequential(RetrainOnly(als, a.every), data, a.batch, rating_range=rng)
        promoted = sum(e["promoted"] for e in gated_learner.log)
        rows.append([name, online.rmse, gated.rmse, only.rmse,
                     f"{promoted}/{len(gated_learner.log)}",
                     C.goal_mark(gated.rmse <= online.rmse),
                     f"{time.perf_counter() - t0:.0f}"])  # fmt: skip
        curves[name] = [("online only", online), ("online + gated retrain", gated),
                        ("retrain only", only)]  # fmt: skip
        logs[name] = gated_learner.log
        C.table(["after event", "holdout", "serving RMSE on holdout", "candidate RMSE",
                 "serving / candidate in shadow", "promoted"],
                [[e["at"], e["holdout"], e["serving"], e["candidate"],
                  f"{C.fmt(e.get('shadow_serving', 'n/a'))} / {C.fmt(e.get('shadow_candidate', 'n/a'))}",
                  "yes" if e["promoted"] else "no"]
                 for e in gated_learner.log], f"{name}: the gate at each retrain")  # fmt: skip
    C.table(["data set", "online only", "online + gated retrain", "retrain only",
             "promoted / retrains", "goal: online + retrain <= online only", "seconds"], rows,
            f"Prequential RMSE, time order, retrain every {a.every:,} events, gate replays "
            f"{rule}, shadow replay {a.shadow:,}, margin {a.margin:.1%}, ALS-WR k={als.factors} reg={als.reg} "
            f"reg_bias={als.reg_bias} {als.iterations} it")  # fmt: skip
    plot(curves, a.plot)
    print(f"load average at the end: {C.load_average()}")
    C.write_json(a.json, {"machine": info, "args": vars(a), "rows": rows, "gate_log": logs})


if __name__ == "__main__":
    main()
