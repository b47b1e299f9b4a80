"""GET /v1/metrics: this API process's write-path counters, in Prometheus' text format (admin).

Per process (each of `serve --workers N` counts its own, labelled with its pid; a scrape reaches
one of them): the group commit's requests, votes and statements (statements per request near 1
means groups are not forming), its deadlock retries and one-by-one fallbacks, and the bulk
lane's batches, waiting and running (app/votes/lanes.py).
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Response

from app.api.access import require
from app.api.deps import ServicesDep

router = APIRouter(tags=["operations"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# Each metric's type and help line; its value comes from the lanes' counters.
METRICS = {
    "softlabels_group_commit_requests_total": (
        "counter",
        "Vote requests stored through the group commit (interactive lane).",
    ),
    "softlabels_group_commit_votes_total": ("counter", "Votes in those requests."),
    "softlabels_group_commit_statements_total": (
        "counter",
        "Statements (calls of the ingest function, retries included) made for them.",
    ),
    "softlabels_group_commit_largest_group": ("gauge", "Requests in the largest group so far."),
    "softlabels_group_commit_deadlock_retries_total": (
        "counter",
        "Groups redone after a deadlock.",
    ),
    "softlabels_group_commit_lock_timeouts_total": (
        "counter",
        "Groups that gave up waiting for a row lock (and were redone one by one).",
    ),
    "softlabels_group_commit_solo_fallbacks_total": (
        "counter",
        "Groups whose requests were redone one by one after an error.",
    ),
    "softlabels_bulk_requests_total": ("counter", "Large vote batches sent to the bulk lane."),
    "softlabels_bulk_votes_total": ("counter", "Votes in those batches."),
    "softlabels_bulk_waiting": ("gauge", "Large batches waiting for their turn."),
    "softlabels_bulk_running": ("gauge", "Large batches being written."),
}


@router.get(
    "/v1/metrics",
    # Response, not PlainTextResponse: the errors (401, 403, ...) stay documented as JSON.
    response_class=Response,
    dependencies=[Depends(require("admin"))],
    responses={
        200: {
            "description": "Prometheus text format.",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(services: ServicesDep) -> Response:
    """The write path's counters since this process started (Prometheus text format)."""
    group = services.votes.committer.stats
    bulk = services.votes.bulk
    values = {
        "softlabels_group_commit_requests_total": group.requests,
        "softlabels_group_commit_votes_total": group.votes,
        "softlabels_group_commit_statements_total": group.statements,
        "softlabels_group_commit_largest_group": group.largest,
        "softlabels_group_commit_deadlock_retries_total": group.deadlock_retries,
        "softlabels_group_commit_lock_timeouts_total": group.lock_timeouts,
        "softlabels_group_commit_solo_fallbacks_total": group.solo_fallbacks,
        "softlabels_bulk_requests_total": bulk.requests,
        "softlabels_bulk_votes_total": bulk.votes,
        "softlabels_bulk_waiting": bulk.waiting,
        "softlabels_bulk_running": bulk.running,
    }
    label = f'{{process="{os.getpid()}"}}'
    lines = []
    for name, (kind, help_text) in METRICS.items():
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} {kind}",
            f"{name}{label} {values[name]}",
        ]
    return Response("\n".join(lines) + "\n", media_type=PROMETHEUS_TEXT)
