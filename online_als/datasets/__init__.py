"""Rating data: the :class:`Ratings` container, chunked file readers, MovieLens loaders.

This is the only part of ``online_als`` that reads files; it never talks to a server.
"""

from online_als.datasets.movielens import (
    DATA_ENV,
    ItemCatalog,
    MovieLensNotFoundError,
    default_data_root,
    load_ml_latest_small,
    load_movielens_100k,
    load_movielens_items,
)
from online_als.datasets.readers import (
    COLUMN_ALIASES,
    detect_format,
    iter_rating_chunks,
    read_ratings,
    rechunk,
)
from online_als.ratings import Ratings, as_str_array, concat, sort_by_time

__all__ = [
    "COLUMN_ALIASES",
    "DATA_ENV",
    "ItemCatalog",
    "MovieLensNotFoundError",
    "Ratings",
    "as_str_array",
    "concat",
    "default_data_root",
    "detect_format",
    "iter_rating_chunks",
    "load_ml_latest_small",
    "load_movielens_100k",
    "load_movielens_items",
    "read_ratings",
    "rechunk",
    "sort_by_time",
]
