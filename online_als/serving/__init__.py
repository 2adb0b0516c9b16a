"""Serving maths: top-N, similar items/users, cold-start fallbacks, fold-in, explanations.

Arrays in, arrays out (no I/O); rows are the model's ``IdMap`` rows.
"""

from online_als.kernels.linalg import gram
from online_als.serving.coldstart import ItemStats, item_stats, popular_items, predict_explicit
from online_als.serving.explain import Explanation, because
from online_als.serving.foldin import fold_in_user, fold_in_user_explicit
from online_als.serving.similar import SimilarityIndex, normalize_rows
from online_als.serving.topn import Allow, AllowFn, top_n, top_n_batch, top_n_scores

__all__ = [
    "Allow",
    "AllowFn",
    "Explanation",
    "ItemStats",
    "SimilarityIndex",
    "because",
    "fold_in_user",
    "fold_in_user_explicit",
    "item_stats",
    "normalize_rows",
    "popular_items",
    "predict_explicit",
    "gram",
    "top_n",
    "top_n_batch",
    "top_n_scores",
]
