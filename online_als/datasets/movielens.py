"""MovieLens loaders (ML-100K and ml-latest-small, as stored under ``shared/data/movielens``).

The data root is looked up at call time (never at import): the ``root`` argument, else the
environment variable ``ONLINE_ALS_DATA``, else ``../shared/data/movielens`` relative to the
repository root (and to the working directory). A root may be the ``movielens`` folder itself
(holding ``ml-100k/``) or its parent.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from online_als.datasets.readers import read_ratings
from online_als.ratings import Ratings

__all__ = [
    "DATA_ENV",
    "ItemCatalog",
    "MovieLensNotFoundError",
    "default_data_root",
    "load_ml_latest_small",
    "load_movielens_100k",
    "load_movielens_items",
]

DATA_ENV = "ONLINE_ALS_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_RELATIVE = Path("..") / "shared" / "data" / "movielens"
_DATASETS = ("ml-100k", "ml-latest-small")


class MovieLensNotFoundError(FileNotFoundError):
    """The MovieLens files are not where they were looked for."""


def _candidates(root: str | Path | None) -> list[Path]:
    if root is not None:
        bases = [Path(root)]
    else:
        env = os.environ.get(DATA_ENV)
        bases = [Path(env)] if env else []
        bases += [_REPO_ROOT / _RELATIVE, Path.cwd() / _RELATIVE]
    out: list[Path] = []
    for base in bases:
        out += [base, base / "movielens"]
    return out


def default_data_root(root: str | Path | None = None) -> Path:
    """Return the folder that holds ``ml-100k/`` or ``ml-latest-small/``.

    Raises
    ------
    MovieLensNotFoundError
        When no candidate holds the data; the message lists every place searched.
    """
    tried = _candidates(root)
    for cand in tried:
        if any((cand / name).is_dir() for name in _DATASETS):
            return cand.resolve()
    raise MovieLensNotFoundError(
        "MovieLens data not found; looked in: "
        + ", ".join(str(c) for c in tried)
        + f". Pass root=... or set {DATA_ENV} to the folder containing ml-100k/."
    )


def _data_file(root: str | Path | None, dataset: str, name: str) -> Path:
    base = default_data_root(root) / dataset
    for cand in (base / f"{name}.gz", base / name):
        if cand.is_file():
            return cand
    raise MovieLensNotFoundError(f"{base / name}[.gz] not found (dataset {dataset})")


def load_movielens_100k(root: str | Path | None = None) -> Ratings:
    """MovieLens 100K ``u.data`` in file order (100,000 ratings, 943 users, 1,682 items).

    File order matters: the release's ``u1..u5`` folds are consecutive 20,000-row blocks of it
    (see :func:`online_als.evaluation.splits.ml100k_folds`).
    """
    return read_ratings(_data_file(root, "ml-100k", "u.data"), fmt="data", encoding="ascii")


def load_ml_latest_small(root: str | Path | None = None) -> Ratings:
    """ml-latest-small ``ratings.csv`` (100,836 ratings, 0.5-5.0 stars), file order."""
    return read_ratings(_data_file(root, "ml-latest-small", "ratings.csv"), fmt="csv")


@dataclass(frozen=True, eq=False, slots=True)
class ItemCatalog:
    """Item metadata: aligned ``item_ids`` (str), ``titles`` (str) and ``genres`` (tuples).

    >>> cat = ItemCatalog.from_rows([("1", "Toy Story (1995)", ("Comedy",))])
    >>> cat.title("1"), len(cat)
    ('Toy Story (1995)', 1)
    """

    item_ids: np.ndarray
    titles: np.ndarray
    genres: tuple[tuple[str, ...], ...]

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, tuple[str, ...]]]) -> ItemCatalog:
        """Build from ``(item_id, title, genres)`` rows."""
        return cls(
            np.array([r[0] for r in rows], dtype=np.str_),
            np.array([r[1] for r in rows], dtype=object),
            tuple(r[2] for r in rows),
        )

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def as_dict(self) -> dict[str, str]:
        """``{item_id: title}``."""
        return dict(zip(self.item_ids.tolist(), self.titles.tolist(), strict=True))

    def title(self, item_id: str) -> str:
        """Title of one item (``KeyError`` if unknown)."""
        hits = np.flatnonzero(self.item_ids == item_id)
        if not hits.size:
            raise KeyError(item_id)
        return str(self.titles[hits[0]])


def _read_text(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode(encoding)


def load_movielens_items(
    root: str | Path | None = None,
    dataset: Literal["ml-100k", "ml-latest-small"] = "ml-100k",
) -> ItemCatalog:
    """Item titles and genres: ``u.item`` (latin-1, ``|``) or ``movies.csv`` (UTF-8 CSV)."""
    rows: list[tuple[str, str, tuple[str, ...]]] = []
    if dataset == "ml-100k":
        genre_text = _read_text(_data_file(root, "ml-100k", "u.genre"), "ascii")
        genre_names = [ln.split("|")[0] for ln in genre_text.splitlines() if ln.strip()]
        text = _read_text(_data_file(root, "ml-100k", "u.item"), "latin-1")
        for line in text.splitlines():
            if not line:
                continue
            parts = line.split("|")
            flags = parts[5:]
            genres = tuple(g for g, f in zip(genre_names, flags, strict=False) if f == "1")
            rows.append((parts[0], parts[1], genres))
    elif dataset == "ml-latest-small":
        text = _read_text(_data_file(root, "ml-latest-small", "movies.csv"), "utf-8")
        reader = csv.reader(io.StringIO(text))
        next(reader)
        for movie_id, title, genre_field in reader:
            genres = () if genre_field == "(no genres listed)" else tuple(genre_field.split("|"))
            rows.append((movie_id, title, genres))
    else:
        raise ValueError(f"unknown dataset {dataset!r}; use 'ml-100k' or 'ml-latest-small'")
    return ItemCatalog.from_rows(rows)
