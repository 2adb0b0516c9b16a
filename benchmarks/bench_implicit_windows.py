"""Implicit mode over time windows: stale model vs the worker's own path vs a full retrain.

Protocol (issue 13; ``online_als.evaluation.window_protocol``): ratings >= 4 are positives,
sorted by time; the last 20% of them are cut into 4 equal windows; for each window, the users
with history and a new window item are asked for a top-10 with their history items excluded;
NDCG@10 and Recall@10 are averaged over the window's users, then over windows.

(a)  stale: a plain ``implicit`` fit (k=64, 15 iterations, lambda 0.05, confidence 10 per
     positive) on the positives before the first window, never updated.
(w)  the worker's path, from ``worker.config.ModelSettings()`` defaults: the version the
     worker's retrain would build from the positives before the first window (``implicit``
     with ``model.alpha``, ``model.implicit_regularization``, ``retrain.iterations``; each
     positive sent as event ``--event``, weighted by ``model.event_weights``), then every later
     positive folded in by the worker's kernel (``OnlineModel`` with ``foldin_regularization``,
     ``alpha``, ``update_items`` and the init scales: the same call as
     ``worker.control.materialize``), with the Gram inverses refreshed the worker's way: at most every
     ``model.gram_refresh_s`` seconds, between micro-batches. Events are replayed at their own
     pace (their timestamps): a micro-batch is the events less than ``worker.batch_max_wait_ms``
     apart (at most ``worker.batch_max_events``). (w-fast) the same replayed as fast as the
     worker runs (batches of ``batch_max_events``, no Gram refresh inside a window: a backlog).
(c)  a full retrain: a plain ``implicit`` fit, as (a), on every positive before the window.

Goals: (w) >= 0.95 x (c) and >= 1.10 x (a), NDCG@10, on ML-100K and ml-latest-small. Windows
hold few users, so the spread is reported: seeds (the fits' random starts) and a paired
bootstrap over the evaluated users (resampled within each window) of the two ratios.

    python benchmarks/bench_implicit_windows.py
    python benchmarks/bench_implicit_windows.py --quick
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from online_als.evaluation import WindowSplit, window_protocol
from online_als.evaluation._arrays import lookup
from online_als.evaluation.metrics import per_user_ranking_metrics
from online_als.events import ImplicitEventMap
from online_als.factors import Factors, ModelArrays
from online_als.idmap import IdMap
from online_als.model import ModelState
from online_als.online import OnlineImplicitParams as FoldinParams
from online_als.online import OnlineModel
from online_als.retrain import ImplicitParams, build_matrix, retrain
from online_als.serving import top_n_batch
from worker.config import ModelSettings, RetrainSettings, WorkerSettings

VARIANTS = ("a", "w", "w-fast", "c")
LABELS = {
    "a": "(a) stale plain implicit fit",
    "w": "(w) worker path, events at their own pace",
    "w-fast": "(w-fast) worker path, replayed as a backlog",
    "c": "(c) full retrain, plain implicit fit",
}
def plain_implicit(history: Ratings, k: int, reg: float, conf: float, iters: int,
                   seed: int) -> ModelArrays:  # fmt: skip
    """``implicit.cpu.als`` on the binary user x item matrix of positives (confidence
    ``conf``), its own random start: the reference of the issue's protocol."""
    import implicit.cpu.als
    from threadpoolctl import threadpool_limits

    users, items = IdMap(), IdMap()
    u = users.rows_for(history.user_ids, add=True)
    i = items.rows_for(history.item_ids, add=True)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(users), len(items)))
    m.sum_duplicates()
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=k, regularization=reg, alpha=conf, iterations=iters, random_state=seed
    )
    with threadpool_limits(1, "blas"):
        model.fit(m, show_progress=False)
    return ModelArrays("implicit", Factors(users.ids, model.user_factors, np.zeros(len(users), np.float32)),
                       Factors(items.ids, model.item_factors, np.zeros(len(items), np.float32)))


def worker_start(history: Ratings, m: ModelSettings, iters: int, weight: float,
                 seed: int) -> ModelState:  # fmt: skip
    """What the worker's retrain job builds from the log (``retrain_job``'s parameters)."""
    w = np.full(len(history), weight, np.float32)
    matrix = build_matrix([(history.user_ids, history.item_ids, w)], "sum")
    params = ImplicitParams(factors=m.rank, reg=m.implicit_regularization, alpha=m.alpha,
                            iterations=iters, seed=seed)  # fmt: skip
    state = retrain("implicit", matrix, params).to_state(seed=seed)
    state.user_init_scale, state.item_init_scale = m.init_scales()
    return state


def micro_batches(ts: np.ndarray, gap_s: float, max_events: int, paced: bool) -> list[int]:
    """Start offsets of the worker's micro-batches (plus the end)."""
    n = len(ts)
    if not paced:
        return list(range(0, n, max_events)) + [n]
    cuts = np.flatnonzero(np.diff(ts) >= gap_s) + 1
    starts = [0]
    for c in [*cuts.tolist(), n]:
        while c - starts[-1] > max_events:
            starts.append(starts[-1] + max_events)
        starts.append(c)
    return starts


class WorkerPath:
    """(w): the worker's fold-in and Gram policy over the events since the last window."""

    def __init__(self, start: ModelState, m: ModelSettings, w: WorkerSettings, weight: float,
                 paced: bool) -> None:  # fmt: skip
        self.model = OnlineModel(start, FoldinParams(m.foldin_regularization, m.alpha,
                                                     m.update_items))  # fmt: skip
        self.refresh_s, self.weight, self.paced = m.gram_refresh_s, weight, paced
        self.gap_s, self.max_events = w.batch_max_wait_ms / 1000.0, w.batch_max_events
        self.last_refresh: float | None = None
        self.refreshes, self.seconds = 0, 0.0

    def update(self, split: WindowSplit) -> None:
        if split.index == 0:  # its history is what the start version was fitted on
            return
        t0 = time.perf_counter()
        new = split.new_history
        ts = new.timestamps.astype(np.float64)
        starts = micro_batches(ts, self.gap_s, self.max_events, self.paced)
        if self.last_refresh is None:
            self.last_refresh = float(ts[0]) if len(ts) else 0.0
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            now = float(ts[lo]) if self.paced else self.last_refresh
            if self.refresh_s > 0 and now - self.last_refresh >= self.refresh_s:
                self.model.refresh_grams()
                self.last_refresh, self.refreshes = now, self.refreshes + 1
            b = new.slice(lo, hi)
            self.model.learn_batch(b.user_ids, b.item_ids, np.full(len(b), self.weight, np.float32))
        self.seconds += time.perf_counter() - t0

    def factors(self) -> ModelArrays:
        s = self.model.state
        return ModelArrays("implicit", Factors(s.users.ids, s.user_factors, s.user_bias),
                           Factors(s.items.ids, s.item_factors, s.item_bias))


def recommend(f: ModelArrays, split: WindowSplit, item_uniques: np.ndarray,
              k: int = 10) -> np.ndarray:  # fmt: skip
    """Top-k rows (in ``item_uniques``) for the split's users, history excluded; users the
    model does not know get no list."""
    uf, itf = f.users.vectors, f.items.vectors
    users, items = IdMap.from_list(f.users.id_list()), IdMap.from_list(f.items.id_list())
    rows = users.rows_for(split.users, add=False)
    out = np.full((len(rows), k), -1, np.int64)
    known = np.flatnonzero(rows >= 0)
    if not len(known):
        return out
    seen = [items.rows_for(split.seen[j], add=False) for j in known]
    top, _ = top_n_batch(np.ascontiguousarray(uf[rows[known]], np.float32), itf, k,
                         exclude=[s[s >= 0] for s in seen])  # fmt: skip
    ids = np.asarray(f.items.id_list(), dtype=object)
    names = np.where(top >= 0, ids[np.maximum(top, 0)], "").astype(np.str_)
    out[known] = np.where(top >= 0, lookup(item_uniques, names.reshape(-1)).reshape(top.shape), -1)
    return out


def run_seed(data: Ratings, a: Any, seed: int) -> dict[str, Any]:
    """Per variant: per-window arrays of per-user NDCG/recall, and update seconds."""
    m, w, r = ModelSettings(mode="implicit"), WorkerSettings(), RetrainSettings()
    weight = ImplicitEventMap.from_string(m.event_weights).weights[a.event]
    item_uniques = np.unique(data.item_ids[data.values >= 4]).astype(np.str_)
    fit: Callable[[Ratings], ModelArrays] = lambda h: plain_implicit(  # noqa: E731
        h, a.k, a.reg, a.confidence, a.iterations, seed)
    out: dict[str, Any] = {v: {"ndcg": [], "recall": [], "seconds": 0.0} for v in VARIANTS}
    stale: ModelArrays | None = None
    paths: dict[str, WorkerPath] = {}
    for split in window_protocol(data):
        t0 = time.perf_counter()
        full = fit(split.history)
        out["c"]["seconds"] += time.perf_counter() - t0 if split.index else 0.0
        if stale is None:
            stale = full
            start = worker_start(split.history, m, r.iterations, weight, seed)
            paths = {"w": WorkerPath(start.copy(), m, w, weight, True),
                     "w-fast": WorkerPath(start.copy(), m, w, weight, False)}  # fmt: skip
        factors = {"a": stale, "c": full}
        for key, path in paths.items():
            path.update(split)
            factors[key] = path.factors()
            out[key]["seconds"], out[key]["refreshes"] = path.seconds, path.refreshes
        relevant = [lookup(item_uniques, x.astype(np.str_)) for x in split.relevant]
        for key in VARIANTS:
            per = per_user_ranking_metrics(recommend(factors[key], split, item_uniques),
                                           relevant, 10)  # fmt: skip
            out[key]["ndcg"].append(per["ndcg"])
            out[key]["recall"].append(per["recall"])
    return out


def window_mean(per_window: list[np.ndarray]) -> float:
    vals = [float(np.nanmean(x)) for x in per_window if len(x)]
    return float(np.mean(vals)) if vals else float("nan")


def bootstrap_ratio(num: list[np.ndarray], den: list[np.ndarray], n_boot: int,
                    seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """2.5% and 97.5% quantiles of mean-over-windows(num) / mean-over-windows(den), users
    resampled with replacement inside each window (paired: the same users for both)."""
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot)
    for b in range(n_boot):
        picks = [rng.integers(0, len(x), len(x)) for x in num]
        top = window_mean([x[p] for x, p in zip(num, picks, strict=True)])
        bottom = window_mean([x[p] for x, p in zip(den, picks, strict=True)])
        ratios[b] = top / bottom if bottom > 0 else np.nan
    lo, hi = np.nanquantile(ratios, [0.025, 0.975])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--datasets", default="ML-100K,ml-latest-small")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--k", type=int, default=64, help="rank of the reference fits")
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--reg", type=float, default=0.05)
    p.add_argument("--confidence", type=float, default=10.0, help="per positive, (a) and (c)")
    p.add_argument("--event", default="view", help="event type the worker gets per positive")
    p.add_argument("--bootstrap", type=int, default=1000)
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.k, a.iterations, a.bootstrap = "0", 8, 2, 50
    info = C.header("bench_implicit_windows: stale vs worker path vs full retrain (NDCG@10)", a)
    m = ModelSettings(mode="implicit")
    print(f"reference: implicit k={a.k} iterations={a.iterations} reg={a.reg} confidence "
          f"{a.confidence}; worker: ModelSettings() rank={m.rank} alpha={m.alpha} "
          f"implicit_regularization={m.implicit_regularization} foldin_regularization="
          f"{m.foldin_regularization} gram_refresh_s={m.gram_refresh_s} init scales "
          f"{m.init_scales()} event {a.event!r}; seeds {a.seeds}")  # fmt: skip
    loaders = {"ML-100K": load_movielens_100k, "ml-latest-small": load_ml_latest_small}
    seeds = [int(s) for s in a.seeds.split(",")]
    summary: dict[str, Any] = {}
    t_start = time.perf_counter()
    for name in a.datasets.split(","):
        try:
            data = loaders[name]()
        except MovieLensNotFoundError as exc:
            C.exit_no_data(exc)
        if a.quick:
            data = data.slice(0, 20_000)
        runs = [run_seed(data, a, s) for s in C.progress(seeds, desc=name)]
        n_users = [len(x) for x in runs[0]["c"]["ndcg"]]
        stats: dict[str, dict[str, Any]] = {}
        for key in VARIANTS:
            nd = np.array([window_mean(r[key]["ndcg"]) for r in runs])
            rc = np.array([window_mean(r[key]["recall"]) for r in runs])
            stats[key] = {"ndcg": float(nd.mean()), "ndcg_sd": float(nd.std()),
                          "recall": float(rc.mean()), "ndcg_per_seed": nd.tolist(),
                          "seconds": float(np.mean([r[key]["seconds"] for r in runs])),
                          "gram_refreshes": runs[0][key].get("refreshes")}  # fmt: skip
        rows = []
        for key in VARIANTS:
            st, goal = stats[key], ""
            if key.startswith("w"):
                rc_, ra_ = st["ndcg"] / stats["c"]["ndcg"], st["ndcg"] / stats["a"]["ndcg"]
                ci_c = bootstrap_ratio(runs[0][key]["ndcg"], runs[0]["c"]["ndcg"], a.bootstrap)
                ci_a = bootstrap_ratio(runs[0][key]["ndcg"], runs[0]["a"]["ndcg"], a.bootstrap)
                st.update(ratio_c=rc_, ratio_a=ra_, ci_c=ci_c, ci_a=ci_a)
                goal = (f"{rc_:.3f}x (c) [{ci_c[0]:.2f}, {ci_c[1]:.2f}] "
                        f"{C.goal_mark(rc_ >= 0.95)}, {ra_:.3f}x (a) "
                        f"[{ci_a[0]:.2f}, {ci_a[1]:.2f}] {C.goal_mark(ra_ >= 1.10)}")  # fmt: skip
            per_seed = " ".join(f"{x:.4f}" for x in st["ndcg_per_seed"])
            rows.append([LABELS[key], f"{st['ndcg']:.4f} ± {st['ndcg_sd']:.4f}", per_seed,
                         f"{st['recall']:.4f}", f"{st['seconds']:.2f}", goal])  # fmt: skip
        C.table(["model", "NDCG@10 (mean ± sd over seeds)", "per seed", "Recall@10",
                 "update / retrain s", "goal: >= 0.95x (c), >= 1.10x (a) [95% user bootstrap]"],
                rows, f"{name}: {len(data):,} ratings; users evaluated per window {n_users}; "
                f"Gram refreshes (w) {stats['w']['gram_refreshes']}")  # fmt: skip
        summary[name] = {"users_per_window": n_users, "variants": stats}
    print(f"\nwall {time.perf_counter() - t_start:.0f} s; load average at the end: "
          f"{C.load_average()}")  # fmt: skip
    C.write_json(a.json, {"machine": info, "args": vars(a), "results": summary})


if __name__ == "__main__":
    main()
