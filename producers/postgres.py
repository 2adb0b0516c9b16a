"""Rating events from PostgreSQL, streamed through a server-side (named) cursor.

The source is a table or any query; its columns are found by name with the same aliases as
the file readers (``user_id``/``userid``/``user``, ``item_id``/``movieid``/..., ``rating``/
``value``/``score``, ``event``/``event_type``/``type``, ``ts``/``timestamp``/``time``).
A rating or an event column is required. Rows come back ordered by the time column, sorted
by the server (``ORDER BY``), so the order is global while the client holds one chunk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from online_als.datasets import COLUMN_ALIASES, Ratings

__all__ = ["iter_postgres_chunks", "source_sql"]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading PostgreSQL needs psycopg 3: pip install 'online-als[postgres]'"
                          ) from exc
    return psycopg


def _columns(names: Sequence[str]) -> dict[str, str]:
    """Logical column -> actual column name, by alias."""
    lowered = {n.lower(): n for n in names}
    found = {}
    for key, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                found[key] = lowered[alias]
                break
    missing = [k for k in ("user", "item") if k not in found]
    if "rating" not in found and "event" not in found:
        missing.append("rating or event")
    if missing:
        raise ValueError(f"PostgreSQL source columns {list(names)} lack {missing}; accepted "
                         f"names: {dict(COLUMN_ALIASES)}")
    return found


def source_sql(table: str | None, query: str | None) -> Any:
    """The source as a composable SQL fragment usable after ``FROM``."""
    from psycopg import sql

    if (table is None) == (query is None):
        raise ValueError("give exactly one of table or query")
    if table is not None:
        # schema.table -> "schema"."table": identifiers are quoted, never interpolated.
        return sql.Identifier(*table.split("."))
    return sql.SQL("({}) AS src").format(sql.SQL(query))  # type: ignore[arg-type]


def iter_postgres_chunks(
    dsn: str,
    *,
    table: str | None = None,
    query: str | None = None,
    chunk_rows: int = 100_000,
    itersize: int = 10_000,
    order: str = "time",
) -> Iterator[Ratings]:
    """Yield :class:`Ratings` of at most ``chunk_rows`` rows from a table or query.

    ``itersize`` is how many rows each network round trip of the named cursor fetches;
    ``order="time"`` sorts by the time column on the server, ``"source"`` keeps the source's.
    """
    if chunk_rows < 1 or itersize < 1:
        raise ValueError("chunk_rows and itersize must be >= 1")
    psycopg = _psycopg()
    from psycopg import sql

    source = source_sql(table, query)
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as probe:  # zero rows: just learn the column names
            probe.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(source))
            cols = _columns([d.name for d in probe.description])
        keys = [k for k in ("user", "item", "rating", "event", "timestamp") if k in cols]
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(cols[k]) for k in keys), source)
        if order == "time" and "timestamp" in cols:
            select = sql.SQL("{} ORDER BY {}").format(select, sql.Identifier(cols["timestamp"]))
        elif order not in ("time", "source"):
            raise ValueError(f"order must be 'time' or 'source', got {order!r}")
        # A named cursor keeps the result on the server; only itersize rows travel at a time.
        with conn.cursor(name="online_als_produce") as cur:
            cur.itersize = itersize
            cur.execute(select)
            while rows := cur.fetchmany(chunk_rows):
                yield _to_ratings(rows, keys)


def _to_ratings(rows: list[tuple[Any, ...]], keys: Sequence[str]) -> Ratings:
    columns = dict(zip(keys, zip(*rows, strict=True), strict=True))
    n = len(rows)
    values = (np.array([_number(v) for v in columns["rating"]], np.float32)
              if "rating" in columns else np.full(n, np.nan, np.float32))
    stamps = (np.array([_seconds(t) for t in columns["timestamp"]], np.int64)
              if "timestamp" in columns else np.zeros(n, np.int64))
    events = (np.array(["" if e is None else str(e) for e in columns["event"]])
              if "event" in columns else None)
    return Ratings.from_columns(
        np.array(columns["user"]), np.array(columns["item"]), values, stamps, events)


def _number(value: Any) -> float:
    if value is None:
        return float("nan")
    return float(value)


def _seconds(value: Any) -> int:
    """Unix seconds from an int/float/Decimal, or a ``timestamp[tz]`` (naive = UTC)."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    return int(value)  # int, float or Decimal seconds
