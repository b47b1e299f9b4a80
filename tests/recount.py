"""The invariant every lifecycle test checks: stored per-item counts equal a recount of the votes
of workers not excluded."""

from __future__ import annotations

from tests.conftest import db_rows


def assert_counts_recount(database_url: str, project: str) -> None:
    rows = db_rows(
        database_url,
        """
        SELECT i.external_id, i.counts, i.n_votes,
               (SELECT coalesce(array_agg(c ORDER BY k), '{}') FROM (
                   SELECT k, count(w.id) AS c
                   FROM generate_series(0, cardinality(p.classes) - 1) k
                   LEFT JOIN votes v ON v.item_id = i.id AND v.label = k
                   LEFT JOIN workers w ON w.id = v.worker_id AND NOT w.excluded
                   GROUP BY k) t)
        FROM items i JOIN projects p ON p.id = i.project_id WHERE p.name = %s
        """,
        project,
    )
    for ext, counts, n_votes, recount in rows:
        assert counts == [int(c) for c in recount], (ext, counts, recount)
        assert n_votes == sum(counts), ext


def version(database_url: str, project: str) -> int:
    return int(
        db_rows(database_url, "SELECT votes_version FROM projects WHERE name = %s", project)[0][0]
    )
