"""Offline and streaming evaluation: metrics, splits, prequential runs, tuning, simulation.

Arrays in, numbers out; the only I/O is through :mod:`online_als.datasets` readers.
See ``docs/evaluation.md`` for definitions and a walk-through.
"""

from online_als.evaluation._arrays import split_by_group
from online_als.evaluation.metrics import (
    catalog_coverage,
    hit_matrix,
    mae,
    map_at_k,
    ndcg_at_k,
    per_user_ranking_metrics,
    precision_at_k,
    ranking_metrics_at_k,
    recall_at_k,
    rmse,
)
from online_als.evaluation.prequential import OnlineLearner, PrequentialResult, prequential
from online_als.evaluation.simulation import (
    FeedbackConfig,
    FeedbackLearner,
    PlantedWorld,
    PopularityLearner,
    RandomLearner,
    SimulationResult,
    simulate_feedback,
)
from online_als.evaluation.splits import (
    kfold,
    kfold_assignments,
    leave_k_out,
    ml100k_allbut,
    ml100k_folds,
    random_split,
    split_by_mask,
    temporal_split,
    time_fold_assignments,
    time_folds,
)
from online_als.evaluation.tuning import (
    SearchResult,
    cross_validate,
    expand_grid,
    grid_search,
    prediction_metric,
)
from online_als.evaluation.windows import (
    WindowEvaluation,
    WindowSplit,
    evaluate_windows,
    window_protocol,
)

__all__ = [
    "split_by_group",
    "FeedbackConfig",
    "FeedbackLearner",
    "OnlineLearner",
    "PlantedWorld",
    "PopularityLearner",
    "PrequentialResult",
    "RandomLearner",
    "SearchResult",
    "SimulationResult",
    "WindowEvaluation",
    "WindowSplit",
    "catalog_coverage",
    "cross_validate",
    "evaluate_windows",
    "expand_grid",
    "grid_search",
    "hit_matrix",
    "kfold",
    "kfold_assignments",
    "leave_k_out",
    "mae",
    "map_at_k",
    "ml100k_allbut",
    "ml100k_folds",
    "ndcg_at_k",
    "per_user_ranking_metrics",
    "precision_at_k",
    "prediction_metric",
    "prequential",
    "random_split",
    "ranking_metrics_at_k",
    "recall_at_k",
    "rmse",
    "simulate_feedback",
    "split_by_mask",
    "temporal_split",
    "time_fold_assignments",
    "time_folds",
    "window_protocol",
]
