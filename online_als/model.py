"""Model state: factors, biases, id maps; versioned npz snapshots (no pickle), validated on load.

Arrays are over-allocated and grow geometrically, so adding ids one batch at a time costs
amortised O(1) per id. ``user_factors`` and friends are views of the used rows: take them
again after :meth:`ModelState.ensure_users` / :meth:`ModelState.ensure_items` (growth
reallocates, and an old view then points at the previous buffer).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from online_als.idmap import IdMap
from online_als.init import ITEM_SALT, USER_SALT, init_vectors

FORMAT_NAME = "online-als-model"
FORMAT_VERSION = 1
Mode = Literal["explicit", "implicit"]
MODES: tuple[str, ...] = get_args(Mode)  # the one definition of the modes
_ARRAYS = ("user_factors", "item_factors", "user_bias", "item_bias")
_KEYS = frozenset(_ARRAYS) | {
    "user_ids_utf8", "user_ids_offsets", "item_ids_utf8", "item_ids_offsets", "meta",
}  # fmt: skip


class ModelFormatError(ValueError):
    """A snapshot that cannot be loaded; the message names the file and the fix."""


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    if need <= arr.shape[0]:
        return arr
    cap = max(need, 2 * arr.shape[0], 64)
    out = np.zeros((cap, *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class ModelState:
    """Factors (float32 ``(n, k)``), biases (float32 ``(n,)``), global mean and id maps.

    Snapshots are one ``.npz`` (``allow_pickle=False``): the four arrays, the id tables as UTF-8
    bytes + offsets, and the JSON metadata (:meth:`meta`, ``FORMAT_VERSION``) as entry ``meta``.

    Biases and the global mean are used in explicit mode only (kept at 0 in implicit mode).
    ``hyper`` holds JSON-able hyper-parameters saved with the snapshot.

    >>> s = ModelState("explicit", k=4, seed=1)
    >>> s.ensure_users(["alice", "bob"]).tolist(), s.user_factors.shape
    ([0, 1], (2, 4))
    """

    FORMAT_VERSION = FORMAT_VERSION

    def __init__(
        self,
        mode: Mode,
        k: int,
        *,
        seed: int = 0,
        user_init_scale: float = 0.1,
        item_init_scale: float = 0.1,
        global_mean: float = 0.0,
        hyper: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'explicit' or 'implicit', got {mode!r}")
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        for name, v in (("user_init_scale", user_init_scale), ("item_init_scale", item_init_scale)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if not math.isfinite(global_mean):
            raise ValueError(f"global_mean must be finite, got {global_mean!r}")
        self.mode: Mode = mode
        self.k = int(k)
        self.seed = int(seed)
        self.user_init_scale = float(user_init_scale)
        self.item_init_scale = float(item_init_scale)
        self.global_mean = float(global_mean)
        self.n_ratings = 0  # ratings behind global_mean, for a running mean
        self.hyper: dict[str, Any] = dict(hyper or {})
        self.users = IdMap()
        self.items = IdMap()
        self._uf: NDArray[np.float32] = np.zeros((0, self.k), np.float32)
        self._if: NDArray[np.float32] = np.zeros((0, self.k), np.float32)
        self._ub: NDArray[np.float32] = np.zeros(0, np.float32)
        self._ib: NDArray[np.float32] = np.zeros(0, np.float32)

    @classmethod
    def from_arrays(
        cls, mode: Mode, user_ids: Iterable[Any], user_factors: NDArray[Any],
        user_bias: NDArray[Any], item_ids: Iterable[Any], item_factors: NDArray[Any],
        item_bias: NDArray[Any], **kwargs: Any,
    ) -> ModelState:  # fmt: skip
        """A state holding the given vectors (copied as float32); ``kwargs`` as in ``__init__``.

        >>> s = ModelState.from_arrays("explicit", ["a"], np.ones((1, 2)), np.zeros(1),
        ...                            [], np.zeros((0, 2)), np.zeros(0))
        >>> s.k, s.n_users, s.n_items
        (2, 1, 0)
        """
        uf = np.ascontiguousarray(user_factors, np.float32)
        itf = np.ascontiguousarray(item_factors, np.float32)
        state = cls(mode, int(uf.shape[1]), **kwargs)
        state.users = IdMap(user_ids)
        state.items = IdMap(item_ids)
        if len(state.users) != len(uf) or len(state.items) != len(itf):
            raise ValueError("ids and factor rows differ in number (or ids repeat)")
        state._uf, state._if = uf.copy(), itf.copy()
        state._ub = np.ascontiguousarray(user_bias, np.float32).copy()
        state._ib = np.ascontiguousarray(item_bias, np.float32).copy()
        return state

    # -- views of the used rows ------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def user_factors(self) -> NDArray[np.float32]:
        return self._uf[: self.n_users]

    @property
    def item_factors(self) -> NDArray[np.float32]:
        return self._if[: self.n_items]

    @property
    def user_bias(self) -> NDArray[np.float32]:
        return self._ub[: self.n_users]

    @property
    def item_bias(self) -> NDArray[np.float32]:
        return self._ib[: self.n_items]

    # -- growth ----------------------------------------------------------------------------
    def ensure_users(self, ids: Iterable[Any] | np.ndarray) -> NDArray[np.int64]:
        """Rows of ``ids``, adding unknown ones with :func:`init_vectors` and zero bias."""
        old = self.n_users
        rows = self.users.rows_for(ids, add=True)
        if self.n_users > old:
            self._uf = _grown(self._uf, self.n_users)
            self._ub = _grown(self._ub, self.n_users)
            new_ids = self.users.ids[old:]
            self._uf[old : self.n_users] = init_vectors(
                new_ids, self.k, self.seed, self.user_init_scale, salt=USER_SALT
            )
            self._ub[old : self.n_users] = 0.0
        return rows

    def ensure_items(self, ids: Iterable[Any] | np.ndarray) -> NDArray[np.int64]:
        """Rows of ``ids``, adding unknown ones with :func:`init_vectors` and zero bias."""
        old = self.n_items
        rows = self.items.rows_for(ids, add=True)
        if self.n_items > old:
            self._if = _grown(self._if, self.n_items)
            self._ib = _grown(self._ib, self.n_items)
            new_ids = self.items.ids[old:]
            self._if[old : self.n_items] = init_vectors(
                new_ids, self.k, self.seed, self.item_init_scale, salt=ITEM_SALT
            )
            self._ib[old : self.n_items] = 0.0
        return rows

    def observe_ratings(self, ratings: NDArray[Any], applied: NDArray[np.uint8]) -> None:
        """Fold the applied ratings into the running ``global_mean`` (explicit mode)."""
        r = np.asarray(ratings, np.float64)[np.asarray(applied, bool)]
        if r.size:
            self.n_ratings += int(r.size)
            self.global_mean += (float(r.sum()) - r.size * self.global_mean) / self.n_ratings

    def copy(self) -> ModelState:
        """Deep copy (arrays trimmed to the used rows)."""
        other = ModelState(
            self.mode, self.k, seed=self.seed, user_init_scale=self.user_init_scale,
            item_init_scale=self.item_init_scale, global_mean=self.global_mean,
            hyper=json.loads(json.dumps(self.hyper)),
        )  # fmt: skip
        other.n_ratings = self.n_ratings
        other.users = IdMap.from_list(self.users.ids)
        other.items = IdMap.from_list(self.items.ids)
        other._uf, other._if = self.user_factors.copy(), self.item_factors.copy()
        other._ub, other._ib = self.user_bias.copy(), self.item_bias.copy()
        return other

    # -- persistence -----------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The JSON metadata stored in a snapshot."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "k": self.k,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "global_mean": self.global_mean,
            "n_ratings": self.n_ratings,
            "seed": self.seed,
            "user_init_scale": self.user_init_scale,
            "item_init_scale": self.item_init_scale,
            "hyper": self.hyper,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` snapshot atomically (temp file + rename); metadata as JSON inside."""
        path = Path(path)
        meta = json.dumps(self.meta(), sort_keys=True, allow_nan=False).encode()
        u_data, u_off = self.users.to_utf8()
        i_data, i_off = self.items.to_utf8()
        arrays: dict[str, NDArray[Any]] = {
            "user_factors": self.user_factors, "item_factors": self.item_factors,
            "user_bias": self.user_bias, "item_bias": self.item_bias,
            "user_ids_utf8": u_data, "user_ids_offsets": u_off,
            "item_ids_utf8": i_data, "item_ids_offsets": i_off,
            "meta": np.frombuffer(meta, np.uint8),
        }  # fmt: skip
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, allow_pickle=False, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Only the JSON metadata of a snapshot (cheap: the factor arrays are not read)."""
        with _open_npz(path) as z:
            return _parse_meta(path, z)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelState:
        """Read and validate a snapshot; raises :class:`ModelFormatError` saying what is wrong."""
        with _open_npz(path) as z:
            meta = _parse_meta(path, z)
            missing = _KEYS - set(z.files)
            if missing:
                raise ModelFormatError(f"{path}: missing arrays {sorted(missing)}; re-save it")
            try:
                arrays = {name: z[name] for name in _KEYS - {"meta"}}
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise ModelFormatError(f"{path}: unreadable array ({exc}); re-save it") from None
        try:
            users = IdMap.from_utf8(arrays["user_ids_utf8"], arrays["user_ids_offsets"])
            items = IdMap.from_utf8(arrays["item_ids_utf8"], arrays["item_ids_offsets"])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"{path}: bad id table: {exc}") from None
        k, n_u, n_i = meta["k"], meta["n_users"], meta["n_items"]
        if (len(users), len(items)) != (n_u, n_i):
            raise ModelFormatError(
                f"{path}: {len(users)} user / {len(items)} item ids but metadata says {n_u} / {n_i}"
            )
        shapes = {"user_factors": (n_u, k), "item_factors": (n_i, k),
                  "user_bias": (n_u,), "item_bias": (n_i,)}  # fmt: skip
        for name, shape in shapes.items():
            a = arrays[name]
            if a.dtype != np.float32 or a.shape != shape:
                raise ModelFormatError(
                    f"{path}: {name} is {a.dtype}{a.shape}, expected float32{shape}"
                )
            if not np.isfinite(a).all():
                raise ModelFormatError(
                    f"{path}: {name} contains NaN/Inf; load an earlier snapshot or retrain"
                )
        try:
            state = cls(
                meta["mode"], k, seed=meta["seed"], user_init_scale=meta["user_init_scale"],
                item_init_scale=meta["item_init_scale"], global_mean=meta["global_mean"],
                hyper=meta["hyper"],
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise ModelFormatError(f"{path}: bad metadata: {exc}") from None
        state.n_ratings = int(meta["n_ratings"])
        state.users, state.items = users, items
        state._uf = np.ascontiguousarray(arrays["user_factors"])
        state._if = np.ascontiguousarray(arrays["item_factors"])
        state._ub = np.ascontiguousarray(arrays["user_bias"])
        state._ib = np.ascontiguousarray(arrays["item_bias"])
        return state


def _open_npz(path: str | os.PathLike[str]) -> Any:
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(f"{path}: not an online-als npz snapshot ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ModelFormatError(f"{path}: a single .npy array, not an online-als npz snapshot")
    return z


def _parse_meta(path: str | os.PathLike[str], z: Any) -> dict[str, Any]:
    if "meta" not in z.files:
        raise ModelFormatError(f"{path}: no 'meta' entry; not an online-als snapshot")
    try:
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{path}: metadata 'format' is not {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        hint = (
            "upgrade online-als"
            if isinstance(version, int) and version > FORMAT_VERSION
            else ("re-export it with a matching online-als version")
        )
        raise ModelFormatError(
            f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION}: {hint}"
        )
    need: dict[str, type | tuple[type, ...]] = {"mode": str, "k": int, "n_users": int, "n_items": int, "global_mean": (int, float),
            "n_ratings": int, "seed": int, "user_init_scale": (int, float),
            "item_init_scale": (int, float), "hyper": dict}  # fmt: skip
    for key, typ in need.items():
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise ModelFormatError(f"{path}: metadata {key!r} missing or of the wrong type")
    if meta["n_users"] < 0 or meta["n_items"] < 0 or meta["n_ratings"] < 0:
        raise ModelFormatError(f"{path}: metadata counts must be >= 0")
    return meta
