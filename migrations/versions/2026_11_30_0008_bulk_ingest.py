"""bulk ingest: large batches planned for their size, vote foreign keys checked at commit

1. A large vote batch is always planned for its own size: `softlabels_ingest_votes_batch`.

PL/pgSQL caches a plan per statement per connection and, after five calls, switches to one
generic plan when that looks cheaper than the custom plans so far. Custom plans for 10k-vote
arrays are costed for 10k rows, the generic plan for an `unnest` of 10, so after a few large
batches the generic plan always wins; made while the tables were small, it probes each vote's
item through the (project_id, id) index with a filter on the external id, a scan of the whole
project per vote, and is kept while the tables grow. In CI two statements of one 10k-vote batch
took 23 s each under that plan (auto_explain) and a 511k-vote import timed out.
`tests/test_write_path.py::test_large_batch_never_runs_on_a_cached_generic_plan` reproduces it:
32M item rows read for 4,000 votes, against a few per vote with custom plans.

The wrapper sets `plan_cache_mode = force_custom_plan` for the call (a function's SET clause
holds for everything it calls). Single votes keep the plain function: forcing custom plans
there costs ~0.9 ms of re-planning per call (3.5 -> 4.3 ms measured on this machine), and their
generic plan is costed for the size they have. app/ingest.py picks the function by batch size.

2. The foreign keys of `votes` (to items and workers) are checked at commit, not at the end of
the ingest statement. Fired inside the function, their per-row checks were re-planned every
time (perf on the backend: 66% of a 10k batch in the after-trigger queue, half of that in the
planner); fired at commit, outside it, they use their cached plans. Measured on one
connection, 10 batches of 10k CIFAR-10H votes: 974 -> 529 ms per batch through the wrapper,
959 -> 577 ms through the plain function. Nothing is given up: the function only inserts ids
it has just found (items locked FOR UPDATE, workers FOR SHARE, so they cannot vanish before
commit), a violation still aborts the transaction, and ON DELETE CASCADE actions are never
deferred (PostgreSQL runs referential actions immediately).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARGS = "bigint, text[], text[], text[], smallint[], text, text[], text[]"


VOTE_FKS = ("fk_votes_item_id_items", "fk_votes_worker_id_workers")


def upgrade() -> None:
    for fk in VOTE_FKS:
        op.execute(f"ALTER TABLE votes ALTER CONSTRAINT {fk} DEFERRABLE INITIALLY DEFERRED")
    op.execute(f"""
CREATE FUNCTION softlabels_ingest_votes_batch({ARGS})
RETURNS TABLE (inserted bigint, updated bigint, unchanged bigint, votes_version bigint)
LANGUAGE sql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$ SELECT * FROM softlabels_ingest_votes($1, $2, $3, $4, $5, $6, $7, $8) $$
""")


def downgrade() -> None:
    for fk in VOTE_FKS:
        op.execute(f"ALTER TABLE votes ALTER CONSTRAINT {fk} NOT DEFERRABLE")
    op.execute(f"DROP FUNCTION softlabels_ingest_votes_batch({ARGS})")
