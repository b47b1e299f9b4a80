"""Reading items back: a sorted, paged list of a project's items and one item in full.

Two kinds of sort, both paged without loading the whole table per page:

- `item` (external id) and `votes` (n_votes, then id) are plain SQL sorts with keyset paging:
  the cursor carries the last row's sort key, so page 1,000 costs what page 1 costs (the
  (project_id, external_id) unique index serves `item`; `votes` is a top-N sort over the
  project's rows, which PostgreSQL does without materializing them).
- `entropy`, `margin` and `gold_disagreement` depend on the soft-label method, so no index can
  hold them. The first request reads the project's stored count vectors in one query (one
  string per chunk, parsed by numpy, no per-row Python), scores every item in one numpy pass
  and keeps the resulting order in a small in-process LRU cache keyed by the project's data
  fingerprint (item count, latest item change, votes_version) and the method. Later pages
  slice that order and read only their own rows. With 100k items the first page costs about
  a second on the (shared, 2-core) development machine and later pages tens of milliseconds
  (benchmarks/items_pages.py; figures in the README, "Paging 100k items").

The cursor of the computed sorts is a position in one snapshot of that order (the fingerprint
travels in the cursor): paging goes on through the same order while it is cached; once evicted
the order is recomputed from the current data and paging continues at the same position.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, text

from app.errors import ValidationFailed
from app.labels.task_analytics import uncertainty

Sort = Literal["entropy", "margin", "votes", "gold_disagreement", "item"]
Order = Literal["asc", "desc"]
SORTS: tuple[str, ...] = ("entropy", "margin", "votes", "gold_disagreement", "item")
COMPUTED = {"entropy", "margin", "gold_disagreement"}
SCORES = ("entropy", "margin", "gold_disagreement")
# (item db ids, counts, n_votes) -> (n, K): a Labeler's probs (app/labels/service.py)
ProbsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class CursorError(ValidationFailed):
    """A cursor that is malformed or was made for another sort: a 422 naming `cursor`."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"Invalid cursor: {reason}.",
            errors=[{"index": None, "field": "cursor", "reason": reason}],
        )


@dataclass(frozen=True)
class PageRow:
    item: str
    n_votes: int
    distribution: list[float] | None
    gold: str | None
    entropy: float | None
    margin: float | None
    gold_disagreement: float | None
    features: list[float] | None


@dataclass(frozen=True)
class Page:
    total: int
    rows: list[PageRow]
    next_cursor: str | None


# --- cursors ------------------------------------------------------------------------------------


def encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _no_constant(name: str) -> Any:
    # json.loads accepts Infinity and NaN by default; no cursor this service writes holds one.
    raise ValueError(f"not JSON: {name}")


def decode_cursor(cursor: str, expect: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw, parse_constant=_no_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise CursorError("not a cursor this service made") from None
    if not isinstance(data, dict) or data.get("s") != expect:
        raise CursorError("made for another sort, order or method; start again without it")
    return data


# --- scores -------------------------------------------------------------------------------------


def scores(
    probs: np.ndarray,
    n_votes: np.ndarray,
    gold: np.ndarray,
    which: tuple[str, ...] = SCORES,
    task_type: str = "single",
) -> dict[str, np.ndarray]:
    """Per item: normalized entropy, margin p1 - p2, and 1 - p(gold); NaN where undefined
    (no votes; no gold). Only the scores named in `which` are computed. A multi-label row is
    per-class probabilities: its entropy is the classes' mean binary entropy and its margin the
    least decided class's |2p - 1| (app/labels/task_analytics.py), as routing ranks them."""
    n = len(n_votes)
    voted = n_votes > 0
    out: dict[str, np.ndarray] = {}
    if n == 0:
        return {k: np.full(0, np.nan) for k in which}
    if "entropy" in which:
        out["entropy"] = np.where(voted, uncertainty(task_type, probs, "entropy"), np.nan)
    if "margin" in which:
        out["margin"] = np.where(voted, 1.0 - uncertainty(task_type, probs, "margin"), np.nan)
    if "gold_disagreement" in which:
        has_gold = voted & (gold >= 0)
        p_gold = probs[np.arange(n), np.clip(gold, 0, probs.shape[1] - 1)]
        out["gold_disagreement"] = np.where(has_gold, 1.0 - p_gold, np.nan)
    return out


def sorted_order(ids: np.ndarray, score: np.ndarray, desc: bool) -> np.ndarray:
    """Positions of `ids` by score (NaN last in both directions), ties by id ascending."""
    key = np.where(np.isnan(score), np.inf, -score if desc else score)
    return np.lexsort((ids, key))


# --- reading ------------------------------------------------------------------------------------

CELLS_PER_CHUNK = 2_000_000  # count-vector entries read per query (a few MB of text)


def fingerprint(conn: Connection, project_id: int, min_votes: int) -> tuple[Any, ...]:
    """What the computed orders depend on: every vote and item change moves updated_at."""
    row = conn.execute(
        text("SELECT count(*), max(updated_at) FROM items WHERE project_id = :p AND n_votes >= :m"),
        {"p": project_id, "m": min_votes},
    ).one()
    return (int(row[0]), str(row[1]))


def read_all_counts(
    conn: Connection, project_id: int, n_classes: int, min_votes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, n_votes, counts (n, K), gold (-1 = none)) of every item, in id-range chunks;
    each chunk comes back as three strings that numpy parses (no per-row Python objects).
    100k items x 10 classes: one query, about 0.3 s on the development machine."""
    chunk = max(1, CELLS_PER_CHUNK // n_classes)
    # n_votes is read, not summed from the counts: a multi-label voter ticks 0..K classes.
    ids_parts, gold_parts, count_parts, n_parts = [], [], [], []
    last = 0
    while True:
        # One scan of the ordered subquery feeds the three aggregates in the same row order.
        row = conn.execute(
            text(
                """
                SELECT count(*), max(id), string_agg(id::text, ','),
                       string_agg(coalesce(gold, -1)::text, ','),
                       string_agg(array_to_string(counts, ','), ','),
                       string_agg(n_votes::text, ',')
                FROM (SELECT id, gold, counts, n_votes FROM items
                      WHERE project_id = :p AND id > :last AND n_votes >= :m
                      ORDER BY id LIMIT :n) c
                """
            ),
            {"p": project_id, "last": last, "m": min_votes, "n": chunk},
        ).one()
        n = int(row[0])
        if n == 0:
            break
        ids_parts.append(np.fromstring(row[2], dtype=np.int64, sep=","))
        gold_parts.append(np.fromstring(row[3], dtype=np.int64, sep=","))
        flat = np.fromstring(row[4], dtype=np.int64, sep=",")
        count_parts.append(flat.reshape(n, n_classes))
        n_parts.append(np.fromstring(row[5], dtype=np.int64, sep=","))
        last = int(row[1])
        if n < chunk:
            break
    if not ids_parts:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty((0, n_classes), np.int64), empty
    return (
        np.concatenate(ids_parts),
        np.concatenate(n_parts),
        np.concatenate(count_parts),
        np.concatenate(gold_parts),
    )


class OrderCache:
    """The last few computed orders (item db ids), so paging does not rescore every item."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def peek(self, key: tuple[Any, ...]) -> np.ndarray | None:
        with self.lock:
            return self.entries.get(key)

    def get(self, key: tuple[Any, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        value = build()
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return value


ORDERS = OrderCache()


def _rows_by_ids(conn: Connection, ids: list[int]) -> list[Any]:
    rows = conn.execute(
        text(
            "SELECT id, external_id, n_votes, counts, gold, features FROM items "
            "WHERE id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"ids": ids},
    ).all()
    pos = {r.id: r for r in rows}
    return [pos[i] for i in ids if i in pos]


def _page_rows(
    rows: Sequence[Any], classes: list[str], probs: ProbsFn, task_type: str
) -> list[PageRow]:
    if not rows:
        return []
    ids = np.asarray([r.id for r in rows], np.int64)
    n_votes = np.asarray([r.n_votes for r in rows], np.int64)
    counts = np.asarray([r.counts for r in rows], np.int64)
    gold = np.asarray([-1 if r.gold is None else r.gold for r in rows], np.int64)
    p = probs(ids, counts, n_votes)
    sc = scores(p, n_votes, gold, task_type=task_type)

    def num(a: np.ndarray, i: int) -> float | None:
        return None if np.isnan(a[i]) else float(a[i])

    return [
        PageRow(
            item=r.external_id,
            n_votes=int(r.n_votes),
            distribution=p[i].tolist() if r.n_votes else None,
            gold=None if r.gold is None else classes[r.gold],
            entropy=num(sc["entropy"], i),
            margin=num(sc["margin"], i),
            gold_disagreement=num(sc["gold_disagreement"], i),
            features=r.features,
        )
        for i, r in enumerate(rows)
    ]


def list_items(
    conn: Connection,
    *,
    project_id: int,
    classes: list[str],
    method_key: str,
    probs: ProbsFn,
    sort: str,
    order: str,
    limit: int,
    cursor: str | None,
    offset: int | None,
    min_votes: int = 0,
    cache: OrderCache = ORDERS,
    task_type: str = "single",
) -> Page:
    """One page of items (see the module docstring). `method_key` names the method and its
    parameters (and the fit's version for worker models): part of the cache key and cursor.
    `cache`: where computed orders are kept (the API keeps one per app)."""
    desc = order == "desc"
    tag = f"{sort}:{order}:{method_key}:{min_votes}"
    state = decode_cursor(cursor, tag) if cursor else None
    try:
        return _list_items(
            conn,
            project_id,
            classes,
            probs,
            sort,
            desc,
            tag,
            limit,
            state,
            offset,
            min_votes,
            cache,
            task_type,
        )
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        if state is None:
            raise
        raise CursorError("not a cursor this service made") from None


def _bigint(value: Any) -> int:
    # Every number a cursor holds is a non-negative bigint; JSON's true is a Python int too.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("bad key")
    return value


def _list_items(
    conn: Connection,
    project_id: int,
    classes: list[str],
    probs: ProbsFn,
    sort: str,
    desc: bool,
    tag: str,
    limit: int,
    state: dict[str, Any] | None,
    offset: int | None,
    min_votes: int,
    cache: OrderCache,
    task_type: str,
) -> Page:
    if sort in COMPUTED:
        start = _bigint(state["o"]) if state else (offset or 0)
        # A cursor names the snapshot its first page was cut from: later pages page through
        # that same order (no rescoring, no fingerprint query) while it stays cached.
        fp: tuple[Any, ...] | None = tuple(state["f"]) if state else None
        ordered = cache.peek((project_id, fp, tag)) if fp else None
        if ordered is None or fp is None:
            fp = fingerprint(conn, project_id, min_votes)

            def build() -> np.ndarray:
                ids, n_votes, counts, gold = read_all_counts(
                    conn, project_id, len(classes), min_votes
                )
                p = probs(ids, counts, n_votes)
                sc = scores(p, n_votes, gold, (sort,), task_type)[sort]
                return ids[sorted_order(ids, sc, desc)]

            ordered = cache.get((project_id, fp, tag), build)
        page_ids = ordered[start : start + limit].tolist()
        found = _rows_by_ids(conn, page_ids)
        end = start + len(page_ids)
        more = end < len(ordered)
        nxt = encode_cursor({"s": tag, "o": end, "f": list(fp)}) if more else None
        return Page(len(ordered), _page_rows(found, classes, probs, task_type), nxt)

    if state:
        total = _bigint(state["t"])
    else:
        total = int(
            conn.execute(
                text("SELECT count(*) FROM items WHERE project_id = :p AND n_votes >= :m"),
                {"p": project_id, "m": min_votes},
            ).scalar_one()
        )
    direction = "DESC" if desc else "ASC"
    cmp = "<" if desc else ">"
    params: dict[str, Any] = {"p": project_id, "m": min_votes, "n": limit + 1}
    if sort == "votes":
        order_by = f"n_votes {direction}, id {direction}"
        where = ""
        if state:
            where = f"AND (n_votes, id) {cmp} (:kv, :kid)"
            params.update(kv=_bigint(state["k"][0]), kid=_bigint(state["k"][1]))
    else:  # item
        order_by = f"external_id {direction}"
        where = ""
        if state:
            where = f"AND external_id {cmp} :kv"
            kv = state["k"][0]
            if not isinstance(kv, str) or "\x00" in kv:
                raise ValueError("bad key")
            params["kv"] = kv
    skip = ""
    if state is None and offset:
        skip, params["off"] = "OFFSET :off", offset
    rows: Sequence[Any] = conn.execute(
        text(
            "SELECT id, external_id, n_votes, counts, gold, features FROM items "
            f"WHERE project_id = :p AND n_votes >= :m {where} "
            f"ORDER BY {order_by} LIMIT :n {skip}"
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more:
        last = rows[-1]
        key = [last.n_votes, last.id] if sort == "votes" else [last.external_id]
        nxt = encode_cursor({"s": tag, "k": key, "t": total})
    return Page(total, _page_rows(rows, classes, probs, task_type), nxt)


# --- one item -----------------------------------------------------------------------------------


def read_item(conn: Connection, project_id: int, external_id: str) -> dict[str, Any] | None:
    """The item's stored fields and its votes (worker external id, label index or a
    multi-label vote's ticks, times)."""
    row = conn.execute(
        text(
            "SELECT i.id, i.external_id, i.n_votes, i.counts, i.gold, i.features, i.meta, "
            "i.created_at, i.updated_at, c.text, c.image_url, c.media_type, "
            "octet_length(c.image) AS image_bytes "
            "FROM items i LEFT JOIN item_content c ON c.item_id = i.id "
            "WHERE i.project_id = :p AND i.external_id = :e"
        ),
        {"p": project_id, "e": external_id},
    ).one_or_none()
    if row is None:
        return None
    votes = conn.execute(
        text(
            "SELECT w.external_id AS worker, v.label, v.ticks, v.created_at, v.updated_at "
            "FROM votes v JOIN workers w ON w.id = v.worker_id "
            "WHERE v.item_id = :i ORDER BY v.created_at, w.external_id"
        ),
        {"i": row.id},
    ).all()
    return {"row": row, "votes": votes}


def read_image(conn: Connection, project_id: int, external_id: str) -> tuple[bytes, str] | None:
    """The item's stored image and its media type; None without an item or a stored image."""
    row = conn.execute(
        text(
            "SELECT c.image, c.media_type FROM items i JOIN item_content c ON c.item_id = i.id "
            "WHERE i.project_id = :p AND i.external_id = :e AND c.image IS NOT NULL"
        ),
        {"p": project_id, "e": external_id},
    ).one_or_none()
    return None if row is None else (bytes(row.image), row.media_type)
