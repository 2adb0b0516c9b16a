"""``online-als recommend`` and ``online-als similar``: query the serving model in Redis.

Both read the version ``<P>:current`` points at through :class:`worker.serving.client.
ServingClient` (the same code a Python serving app uses) and write nothing. Exit codes: 0 ok,
2 bad usage, 3 no model version in Redis or Redis unreachable.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from worker.cli.common import EXIT_DOWN, EXIT_OK, EXIT_USAGE, add_common, emit, settings_from

if TYPE_CHECKING:
    from worker.serving.client import Recommendations, ServingClient

log = logging.getLogger("online_als.serving")

RECOMMEND_EXAMPLES = """examples:
  online-als recommend --user 196
  online-als recommend --user 196 --n 5 --json
  online-als recommend --user 196 --titles /work/shared/data/movielens/ml-100k/u.item.gz
  online-als recommend --new-user "50=5,181=4,1=1"        # anonymous user, nothing written
  online-als recommend --new-user "i3=like,i9=view"        # implicit model: event names
  online-als recommend --user 196 --because 318            # why 318 for user 196
  online-als recommend --user 196 --category Comedy --exclude 50,181
"""

SIMILAR_EXAMPLES = """examples:
  online-als similar --item 50
  online-als similar --item 50 --n 5 --titles /work/shared/data/movielens/ml-100k/u.item.gz
  online-als similar --user 196 --json
"""


def _add_filter_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("business filters (docs/serving.md#filters)")
    g.add_argument("--exclude", metavar="ID,...", help="never return these item ids")
    g.add_argument("--include", metavar="ID,...", help="return only these item ids")
    g.add_argument("--category", metavar="C,...", help="items with any of these categories")
    g.add_argument("--exclude-category", metavar="C,...", help="drop items with these categories")


def _filters(args: argparse.Namespace) -> Any:
    """The ItemFilters of the flags (None: no filter flag given)."""
    from worker.serving.filters import ItemFilters

    def ids(value: str | None) -> list[str] | None:
        return None if value is None else [v for v in value.split(",") if v]

    flt = ItemFilters(exclude=ids(args.exclude) or (), include=ids(args.include),
                      categories=ids(args.category),
                      exclude_categories=ids(args.exclude_category))
    return None if flt.empty else flt


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--titles", metavar="PATH",
                   help="MovieLens u.item[.gz] or movies.csv (or its data folder): show titles")


def add_recommend_parser(sub: Any) -> None:
    """Register ``recommend`` on the ``online-als`` sub-parsers."""
    p = sub.add_parser(
        "recommend", help="top-N recommendations for a user or an anonymous new user",
        description="Top-N items for a user (seen items excluded), or for an anonymous user "
        "given a few ratings, from the model version Redis serves. Reads only.", epilog=RECOMMEND_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="USER_ID", help="a user id as sent in the events")
    who.add_argument("--new-user", metavar="ITEM=VALUE,...",
                     help="ratings (explicit) or weights/event names (implicit) of an "
                     "anonymous user; folded in on the fly, never stored")
    p.add_argument("--include-seen", action="store_true",
                   help="do not exclude the items the user already rated/interacted with")
    p.add_argument("--because", metavar="ITEM_ID",
                   help="with --user: the user's history items that explain ITEM_ID")
    _add_output_flags(p)
    _add_filter_flags(p)
    p.set_defaults(func=_run_recommend)


def add_similar_parser(sub: Any) -> None:
    """Register ``similar`` on the ``online-als`` sub-parsers."""
    p = sub.add_parser(
        "similar", help="items (or users) with the most similar factors (cosine)",
        description="Items (or users) whose factors are most cosine-similar, from the model "
        "version Redis serves. An unknown item gets the most popular items. Reads only.", epilog=SIMILAR_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", metavar="ITEM_ID")
    what.add_argument("--user", metavar="USER_ID")
    _add_output_flags(p)
    _add_filter_flags(p)
    p.set_defaults(func=_run_similar)


def parse_new_user(spec: str) -> dict[str, float | str]:
    """``"50=5,181=4.5,i3=like"`` -> ``{"50": 5.0, "181": 4.5, "i3": "like"}``.

    >>> parse_new_user("50=5, i3=like")
    {'50': 5.0, 'i3': 'like'}
    """
    out: dict[str, float | str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        item, sep, value = part.partition("=")
        item, value = item.strip(), value.strip()
        if not sep or not item or not value:
            raise ValueError(f"bad entry {part.strip()!r}: expected ITEM=VALUE, e.g. 50=5")
        try:
            out[item] = float(value)
        except ValueError:
            out[item] = value  # an implicit event name, checked against the event weights
    if not out:
        raise ValueError("--new-user needs at least one ITEM=VALUE, e.g. --new-user 50=5,181=4")
    return out


def _titles_from_file(p: Path) -> dict[str, str]:
    """``{item_id: title}`` of one file: ``movies.csv`` style (CSV with a header row) when
    the name holds ``.csv``, else ``u.item`` style (``id|title|...``, latin-1); gzip is fine."""
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if ".csv" in p.name:
        rows = csv.reader(io.StringIO(raw.decode("utf-8")))
        next(rows, None)
        return {r[0]: r[1] for r in rows if len(r) >= 2}
    return {parts[0]: parts[1] for line in raw.decode("latin-1").splitlines()
            if len(parts := line.split("|")) >= 2}


def load_titles(path: str) -> dict[str, str]:
    """``{item_id: title}`` from a MovieLens ``u.item[.gz]``/``movies.csv`` or data folder."""
    from online_als.datasets import load_movielens_items

    p = Path(path)
    dataset: Literal["ml-100k", "ml-latest-small"]
    if p.is_file():  # any existing file: read it as it is, wherever it lies
        return _titles_from_file(p)
    else:
        is_dataset_dir = any((p / n).exists() for n in ("u.item", "u.item.gz"))
        csv_dir = any((p / n).exists() for n in ("movies.csv", "movies.csv.gz"))
        dataset = "ml-latest-small" if csv_dir else "ml-100k"
        root = p.parent if is_dataset_dir or csv_dir else p
    return load_movielens_items(root, dataset).as_dict()


def _client(args: argparse.Namespace) -> ServingClient:
    from worker.serving.client import ServingClient

    if str(args.log_level).upper() == "INFO":  # "serving model version N" is noise on a CLI
        log.setLevel(logging.WARNING)
    # one-shot: load once and never re-check, so every part of the answer is one version
    return ServingClient.from_settings(settings_from(args), refresh_s=math.inf,
                                       reload_items_s=None)


def _payload(recs: Recommendations, cache_mode: str, titles: dict[str, str] | None,
             clip: tuple[float, float] | None = None, **about: Any) -> dict[str, Any]:
    """``clip``: the rating range; explicit model scores (predicted ratings) are shown
    clipped to it, in the order the model ranked them. Popular-fallback scores are event
    counts, shown as integers."""
    rows = []
    for item_id, score in recs:
        value: float | int
        if recs.source == "popular":
            value = int(round(score))
        elif clip is not None and cache_mode == "explicit":
            value = round(min(max(score, clip[0]), clip[1]), 6)
        else:
            value = round(score, 6)
        row: dict[str, Any] = {"id": item_id, "score": value}
        if titles is not None:
            row["title"] = titles.get(item_id)
        rows.append(row)
    return {**about, "version": recs.version, "mode": cache_mode, "source": recs.source,
            "results": rows}


def _table(payload: dict[str, Any]) -> str:
    about = ", ".join(f"{k} {v}" for k, v in payload.items()
                      if k not in ("results", "version", "mode", "source", "because",
                                   "because_item"))
    head = (f"model version {payload['version']} ({payload['mode']}), {about}: "
            f"{len(payload['results'])} results ({payload['source']})")
    lines = [head]
    if payload["results"]:
        popular = payload["source"] == "popular"  # scores are event counts
        width = max(len(str(r["id"])) for r in payload["results"])
        lines.append(f"{'#':>3}  {'id':<{width}}  {'events' if popular else 'score':>9}" +
                     ("  title" if "title" in payload["results"][0] else ""))
        for j, r in enumerate(payload["results"], start=1):
            title = f"  {r['title'] or '?'}" if "title" in r else ""
            score = f"{int(r['score']):>9d}" if popular else f"{r['score']:>9.4f}"
            lines.append(f"{j:>3}  {r['id']:<{width}}  {score}{title}")
    if "because" in payload:
        lines.append(f"{payload['because_item']} is recommended because of:")
        for r in payload["because"]:
            title = f"  {r['title'] or '?'}" if "title" in r else ""
            lines.append(f"     {r['id']}  contribution {r['contribution']:.4f}{title}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace, query: Any) -> int:
    """Run ``query(client, titles)``, mapping missing model/Redis to exit 3."""
    import redis

    from worker.serving.client import NoModelError

    try:
        titles = load_titles(args.titles) if args.titles else None
    except (OSError, ValueError) as exc:
        print(f"online-als: --titles {args.titles}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.n < 0:
        print("online-als: --n must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = _client(args)
        payload = query(client, titles)
    except NoModelError as exc:
        print(f"online-als: {exc}", file=sys.stderr)
        return EXIT_DOWN
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError):
        raise  # wrong credentials: a configuration error (exit 2), mapped in worker.cli.main
    except redis.ConnectionError as exc:
        if "certificate verify failed" in str(exc).lower():
            raise  # an untrusted server certificate: configuration (exit 2), see worker.cli.main
        print(f"online-als: Redis is unreachable ({exc}); is the stack up? "
              "(online-als stack status)", file=sys.stderr)
        return EXIT_DOWN
    except ValueError as exc:
        print(f"online-als: {exc}", file=sys.stderr)
        return EXIT_USAGE
    emit(args, payload, _table)
    return EXIT_OK


def _run_recommend(args: argparse.Namespace) -> int:
    if args.because and not args.user:
        print("online-als: --because needs --user", file=sys.stderr)
        return EXIT_USAGE

    m = settings_from(args).model
    clip = (m.rating_min, m.rating_max)

    def query(client: ServingClient, titles: dict[str, str] | None) -> dict[str, Any]:
        if args.new_user is not None:
            ratings = parse_new_user(args.new_user)
            recs = client.recommend_for_new_user(ratings, args.n, filter=_filters(args))
            return _payload(recs, client.cache().mode, titles, clip, new_user=args.new_user)
        recs = client.recommend(args.user, args.n, exclude_seen=not args.include_seen,
                                filter=_filters(args))
        payload = _payload(recs, client.cache().mode, titles, clip, user=args.user)
        if args.because:
            payload["because_item"] = args.because
            payload["because"] = [
                {"id": i, "contribution": round(c, 6),
                 **({"title": titles.get(i)} if titles is not None else {})}
                for i, c in client.because(args.user, args.because, args.n)]
        return payload

    return _serve(args, query)


def _run_similar(args: argparse.Namespace) -> int:
    if args.user is not None and _filters(args) is not None:
        print("online-als: the filters apply to items (--item), not to similar users",
              file=sys.stderr)
        return EXIT_USAGE

    def query(client: ServingClient, titles: dict[str, str] | None) -> dict[str, Any]:
        if args.item is not None:
            recs = client.similar_items(args.item, args.n, filter=_filters(args))
            return _payload(recs, client.cache().mode, titles, item=args.item)
        recs = client.similar_users(args.user, args.n)
        return _payload(recs, client.cache().mode, None, user=args.user)

    return _serve(args, query)
