"""Implicit mode over time windows: stale model vs online updates vs full retrain.

Protocol (``online_als.evaluation.window_protocol``): ratings >= 4 are positives (weight 1),
sorted by time; the last 20% of them are cut into 4 equal windows; for each window, users
with history and new window items are asked for a top-10 (history items excluded); NDCG@10
and Recall@10 are averaged over the window's users, then over windows. Models (``implicit``
ALS through ``retrain("implicit")``, k=64, 15 iterations, reg 0.05, alpha 10):

(a)  stale: fitted once on the first 80% of positives, never updated; users it does not
     know get no list. Context only: (a0) unknown users get a zero vector, so all scores tie
     and the first-seen items come out (an artefact, but closest to the reference figure);
     (a') unknown users get the most popular training items.
(b)  the stale model plus online updates from every positive before the window:
     b1 fold-in kernel (``OnlineModel.implicit``, users and items, grams refreshed before
     every micro-batch of ``--batch`` events); b2 b1 + exact re-solve (``resolve_users``) of
     the users touched since the last window, from their history; b3 b1 + exact re-solve of
     the touched items, then of the touched users (one partial ALS sweep).
(c)  a full retrain on every positive before the window.

Goals: (b) >= 0.95 x (c) and (b) >= 1.10 x (a), NDCG@10. Each figure is the mean over
``--seeds`` (the fits' random starts); windows hold few users, so seed-to-seed spread is shown.

    python benchmarks/bench_implicit_windows.py
    python benchmarks/bench_implicit_windows.py --quick
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common as C
import numpy as np
import scipy.sparse as sp

from online_als.datasets import (
    MovieLensNotFoundError,
    Ratings,
    load_ml_latest_small,
    load_movielens_100k,
)
from online_als.evaluation import WindowSplit, evaluate_windows
from online_als.idmap import IdMap
from online_als.kernels import gram, resolve_users
from online_als.model import ModelState
from online_als.online import ImplicitParams as FoldinParams
from online_als.online import OnlineModel
from online_als.retrain import ImplicitParams, build_matrix, retrain
from online_als.serving import top_n_batch

NDCG_REF = {"ML-100K": (0.073, 0.112), "ml-latest-small": (0.034, 0.077)}  # (a), (c)
VARIANTS = ("a", "a0", "a'", "b1", "b2", "b3", "c")
LABELS = {
    "a": "(a) stale",
    "a0": "(a0) stale, unknown users scored with a zero vector",
    "a'": "(a') stale + popular items for unknown users",
    "b1": "(b1) stale + fold-in (users + items)",
    "b2": "(b2) stale + fold-in + exact re-solve of touched users",
    "b3": "(b3) stale + fold-in + re-solve touched items, then users",
    "c": "(c) full retrain before each window",
}
PRIMARY_B = "b2"


class Recommender:
    """Top-n from factors and id maps; unknown users get ``fallback``, a zero-vector top-n
    (``zero_unknown``) or nothing."""

    def __init__(self) -> None:
        self.user_f = np.zeros((0, 1), np.float32)
        self.item_f = np.zeros((0, 1), np.float32)
        self.users, self.items = IdMap(), IdMap()
        self.fallback: np.ndarray | None = None  # item ids, most popular first
        self.zero_unknown = False

    def set(self, user_f: np.ndarray, item_f: np.ndarray, users: IdMap, items: IdMap) -> None:
        self.user_f, self.item_f, self.users, self.items = user_f, item_f, users, items

    def __call__(self, user_ids: np.ndarray, n: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        rows = self.users.rows_for(user_ids, add=False)
        known = np.flatnonzero((rows >= 0) | self.zero_unknown)
        out = np.full((len(rows), n), "", dtype=object)
        seen = [self.items.rows_for(exclude[j], add=False) for j in known]
        vecs = np.where((rows[known] >= 0)[:, None], self.user_f[np.maximum(rows[known], 0)], 0)
        top, _ = top_n_batch(vecs.astype(np.float32), self.item_f, n,
                             exclude=[s[s >= 0] for s in seen])  # fmt: skip
        ids = np.asarray(self.items.ids, dtype=object)
        out[known] = np.where(top >= 0, ids[np.maximum(top, 0)], "")
        if self.fallback is not None:
            for j in np.flatnonzero(rows < 0):
                pick = self.fallback[~np.isin(self.fallback, exclude[j])][:n]
                out[j, : len(pick)] = pick
        return out.astype(str)


def fit(history: Ratings, params: ImplicitParams) -> tuple[ModelState, float]:
    """``build_matrix`` (weights summed) + ``retrain("implicit")``; state and seconds."""
    t0 = time.perf_counter()
    m = build_matrix([(history.user_ids, history.item_ids, np.ones(len(history), np.float32))],
                     "sum")  # fmt: skip
    state = retrain("implicit", m, params).to_state(seed=params.seed)
    state.user_init_scale, state.item_init_scale = 0.0, 0.01  # fold-in conventions
    return state, time.perf_counter() - t0


def _touched_csr(
    rows: np.ndarray, cols: np.ndarray, select: np.ndarray, n_cols: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR (one row per ``select`` entry, sorted) of its events: confidence alpha, pref 1."""
    keep = np.isin(rows, select)
    r = np.searchsorted(select, rows[keep])
    m = sp.csr_matrix((np.ones(r.size, np.float32), (r, cols[keep])), shape=(len(select), n_cols))
    m.sum_duplicates()
    conf = (alpha * m.data).astype(np.float32)
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), conf, np.ones_like(conf)


class OnlineVariant:
    """(b): fold-in of the events since the last window, then optional exact re-solves."""

    def __init__(self, stale: ModelState, params: ImplicitParams, resolve: str, batch: int):
        self.model = OnlineModel(stale.copy(), FoldinParams(params.reg, params.alpha, True))
        self.reg, self.alpha, self.resolve, self.batch = params.reg, params.alpha, resolve, batch
        self.seconds = 0.0

    def update(self, split: WindowSplit) -> None:
        if split.index == 0:  # its history is the stale model's training set
            return
        t0 = time.perf_counter()
        new, m = split.new_history, self.model
        for start in range(0, len(new), self.batch):
            b = new.slice(start, min(start + self.batch, len(new)))
            m.refresh_grams()
            m.learn_batch(b.user_ids, b.item_ids, np.ones(len(b), np.float32))
        s = m.state
        if self.resolve:
            hu = s.users.rows_for(split.history.user_ids, add=False)
            hi = s.items.rows_for(split.history.item_ids, add=False)
            touched_u = np.unique(s.users.rows_for(new.user_ids, add=False))
            touched_i = np.unique(s.items.rows_for(new.item_ids, add=False))
            if "items" in self.resolve:
                csr = _touched_csr(hi, hu, touched_i, s.n_users, self.alpha)
                s.item_factors[touched_i] = resolve_users(
                    s.user_factors, gram(s.user_factors, self.reg), *csr
                )
            csr = _touched_csr(hu, hi, touched_u, s.n_items, self.alpha)
            s.user_factors[touched_u] = resolve_users(
                s.item_factors, gram(s.item_factors, self.reg), *csr
            )
        m.refresh_grams()
        self.seconds += time.perf_counter() - t0


def run_seed(data: Ratings, params: ImplicitParams, batch: int) -> dict[str, Any]:
    """Every variant for one seed: per variant the WindowEvaluation and update seconds."""
    out: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    def stale_fit(split: WindowSplit) -> ModelState:
        if "stale" not in holder:
            holder["stale"], holder["fit_seconds"] = fit(split.history, params)
            ids, counts = np.unique(split.history.item_ids, return_counts=True)
            holder["popular"] = ids[np.argsort(-counts, kind="stable")][:500].astype(object)
        state: ModelState = holder["stale"]
        return state

    def evaluate(key: str, before: Callable[[WindowSplit], None], rec: Recommender) -> None:
        t0 = time.perf_counter()
        out[key] = {"eval": evaluate_windows(data, rec, before_window=before)}
        out[key]["wall"] = time.perf_counter() - t0

    for key in ("a", "a0", "a'"):
        rec = Recommender()

        def before_stale(split: WindowSplit, rec: Recommender = rec, key: str = key) -> None:
            s = stale_fit(split)
            rec.set(s.user_factors, s.item_factors, s.users, s.items)
            rec.fallback = holder["popular"] if key == "a'" else None
            rec.zero_unknown = key == "a0"

        evaluate(key, before_stale, rec)
        out[key]["update_seconds"] = 0.0
    for key, resolve in (("b1", ""), ("b2", "users"), ("b3", "items+users")):
        rec = Recommender()
        variant: dict[str, OnlineVariant] = {}

        def before_online(split: WindowSplit, rec: Recommender = rec, resolve: str = resolve,
                          variant: dict[str, OnlineVariant] = variant) -> None:  # fmt: skip
            if not variant:
                variant["v"] = OnlineVariant(stale_fit(split), params, resolve, batch)
            v = variant["v"]
            v.update(split)
            s = v.model.state
            rec.set(s.user_factors, s.item_factors, s.users, s.items)

        evaluate(key, before_online, rec)
        out[key]["update_seconds"] = variant["v"].seconds
    rec = Recommender()
    retrain_seconds = [0.0]

    def before_full(split: WindowSplit) -> None:
        if split.index == 0:  # same data and seed as the stale fit: reuse it
            s = stale_fit(split)
        else:
            s, secs = fit(split.history, params)
            retrain_seconds[0] += secs
        rec.set(s.user_factors, s.item_factors, s.users, s.items)

    evaluate("c", before_full, rec)
    out["c"]["update_seconds"] = retrain_seconds[0]
    return out


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--datasets", default="ML-100K,ml-latest-small")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--reg", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1000, help="fold-in micro-batch (grams refreshed)")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.k, a.iterations = "0", 8, 2
    info = C.header("bench_implicit_windows: stale vs online vs retrain (NDCG@10, Recall@10)", a)
    loaders = {"ML-100K": load_movielens_100k, "ml-latest-small": load_ml_latest_small}
    seeds = [int(s) for s in a.seeds.split(",")]
    base = ImplicitParams(factors=a.k, reg=a.reg, alpha=a.alpha, iterations=a.iterations)
    print(f"implicit ALS: k={a.k} iterations={a.iterations} reg={a.reg} alpha={a.alpha} "
          f"(CG, {base.cg_steps} steps); seeds {seeds}; fold-in batches of {a.batch}")  # fmt: skip
    summary: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name in a.datasets.split(","):
        try:
            data = loaders[name]()
        except MovieLensNotFoundError as exc:
            C.exit_no_data(exc)
        if a.quick:
            data = data.slice(0, 20_000)
        per_seed = [run_seed(data, dataclasses.replace(base, seed=s), a.batch)
                    for s in C.progress(seeds, desc=name)]  # fmt: skip
        n_users = per_seed[0]["c"]["eval"].n_users.tolist()
        stats: dict[str, dict[str, float]] = {}
        for key in VARIANTS:
            nd = np.array([r[key]["eval"].mean_ndcg for r in per_seed])
            rc = np.array([r[key]["eval"].mean_recall for r in per_seed])
            secs = float(np.mean([r[key]["update_seconds"] for r in per_seed]))
            stats[key] = {"ndcg": float(nd.mean()), "ndcg_sd": float(nd.std()),
                          "recall": float(rc.mean()), "recall_sd": float(rc.std()),
                          "seconds": secs, "ndcg_per_seed": nd.tolist()}  # fmt: skip
        ref_a, ref_c = NDCG_REF.get(name, (float("nan"), float("nan")))
        rows = []
        for key in VARIANTS:
            st = stats[key]
            ref = {"a": ref_a, "c": ref_c}.get(key, float("nan"))
            ratio_c = st["ndcg"] / stats["c"]["ndcg"]
            ratio_a = st["ndcg"] / stats["a"]["ndcg"]
            goal = ""
            if key.startswith("b"):
                goal = (f"{ratio_c:.2f}x (c) {C.goal_mark(ratio_c >= 0.95)}, "
                        f"{ratio_a:.2f}x (a) {C.goal_mark(ratio_a >= 1.10)}")  # fmt: skip
            rows.append([LABELS[key] + (" [primary b]" if key == PRIMARY_B else ""),
                         f"{st['ndcg']:.4f} ± {st['ndcg_sd']:.4f}", C.fmt(ref),
                         f"{st['recall']:.4f} ± {st['recall_sd']:.4f}", f"{st['seconds']:.2f}",
                         goal])  # fmt: skip
        C.table(["model", "NDCG@10 (mean ± sd over seeds)", "reference NDCG@10",
                 "Recall@10", "update / retrain s (all windows)",
                 "goal: >= 0.95x (c) and >= 1.10x (a)"], rows,
                f"{name}: {len(data):,} ratings; users evaluated per window {n_users}")  # fmt: skip
        summary[name] = {"users_per_window": n_users, "variants": stats}
    print(f"\nwall {time.perf_counter() - t_start:.0f} s; load average at the end: "
          f"{C.load_average()}")  # fmt: skip
    C.write_json(a.json, {"machine": info, "args": vars(a), "results": summary})


if __name__ == "__main__":
    main()
