"""Outbound webhooks: per-project subscriptions, events recorded in the transaction that caused
them, delivered by the job queue (procrastinate) with retries and backoff, signed with the
Standard Webhooks scheme (app/webhooks/signing.py), and a delivery log per subscription.

Events:
- `training_job.finished`: a training job reached succeeded, failed or cancelled
  (app/training/jobs.py, and the cancel route for a queued job).
- `item.settled`: after ingest, an item reached the subscription's `settle_votes`, or the
  normalized entropy of its counts fell below `settle_entropy` (with at least 2 votes): the
  signal a labeling tool needs to stop routing it. Sent by each ingest that leaves an item
  settled, so again when a later vote changes a settled item (each carries the current counts;
  per item they arrive in order, so the last one received is current).

Each event is a `webhook_deliveries` row plus one queue job, inserted on the caller's connection,
so a rolled-back request sends nothing. Jobs carry the procrastinate lock
`webhook:<subscription>:<order key>` (the item, or the training job): deliveries for one item
go out one at a time in the order they were recorded, a retry included.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import procrastinate
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from app import outbound
from app.db import functions
from app.webhooks.signing import sign

log = logging.getLogger(__name__)

WEBHOOK_TASK = "softlabels.webhook"
WEBHOOK_QUEUE = "webhooks"
MAX_ATTEMPTS = 6  # then the delivery is marked failed and the next one for its key goes out
# Backoff between attempts: 2, 4, 8, 16, 32 s (procrastinate: exponential_wait ** attempt).
RETRY = procrastinate.RetryStrategy(max_attempts=MAX_ATTEMPTS - 1, exponential_wait=2)
TIMEOUT_S = 10.0

# Defers only, on a connection it is handed (the caller's transaction): its pool never opens.
_deferrer = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())


@_deferrer.task(name=WEBHOOK_TASK, queue=WEBHOOK_QUEUE)
def _deliver_stub(delivery_id: int) -> None:
    raise RuntimeError("this process only defers webhook deliveries")


def _raw(conn: Session | Connection) -> Any:
    c = conn.connection() if isinstance(conn, Session) else conn
    return c.connection.driver_connection


def _enqueue(conn: Session | Connection, rows: list[Any]) -> int:
    raw = _raw(conn)
    for row in rows:
        _deliver_stub.configure(
            connection=raw, lock=f"webhook:{row.subscription_id}:{row.order_key}"
        ).defer(delivery_id=int(row.id))
    return len(rows)


def emit_settled(session: Session | Connection, project_id: int) -> int:
    """Record and queue `item.settled` for the items this transaction changed. Costs one
    indexed lookup when the project has no such subscription. The SQL lives in the database
    (app/db/sql/softlabels_emit_settled.sql) because the vote upsert calls it too."""
    return functions.emit_settled(session, project_id=project_id)


def emit_job_finished(conn: Session | Connection, job_id: int) -> int:
    """Record and queue `training_job.finished` for a job that just reached a terminal state."""
    rows = conn.execute(
        text(
            """
INSERT INTO webhook_deliveries (subscription_id, msg_id, event, order_key, dedupe_key, payload)
SELECT s.id, 'msg_' || md5(random()::text || clock_timestamp()::text),
       'training_job.finished', 'job:' || j.id, 'training_job.finished:' || j.id,
       jsonb_build_object(
           'type', 'training_job.finished', 'timestamp',
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'data', jsonb_build_object(
               'project', p.name, 'job_id', j.id, 'status', j.status, 'error', j.error,
               'metrics', j.metrics, 'votes_version', j.votes_version))
FROM training_jobs j JOIN projects p ON p.id = j.project_id
JOIN webhook_subscriptions s ON s.project_id = j.project_id
WHERE j.id = :j AND j.status IN ('succeeded', 'failed', 'cancelled') AND s.active
  AND 'training_job.finished' = ANY(s.events)
ON CONFLICT (subscription_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
RETURNING id, subscription_id, order_key
"""
        ),
        {"j": job_id},
    ).all()
    return _enqueue(conn, list(rows))


class DeliveryFailed(Exception):
    """Raised to have procrastinate retry the delivery (with backoff)."""


# A receiver's reply is not used: read at most this much of it, then drop it.
REPLY_BYTES = 64 * 1024


def _post(
    url: str, headers: dict[str, str], body: bytes, policy: outbound.Policy | None = None
) -> tuple[int | None, str | None]:
    """Status and error of one delivery attempt, under the address policy. The error names what
    failed (refused by the policy, no connection, the deadline), not the receiver's reply."""
    try:
        reply = outbound.request(
            "POST",
            url,
            headers=headers,
            body=body,
            deadline_s=TIMEOUT_S,
            max_bytes=REPLY_BYTES,
            truncate=True,
            policy=policy,
        )
    except outbound.OutboundError as exc:
        return None, str(exc)[:300]
    if 200 <= reply.status < 300:
        return reply.status, None
    return reply.status, f"HTTP {reply.status}"


def deliver(engine: Engine, delivery_id: int) -> None:
    """The worker's task: send one delivery; on failure record it and raise for a retry, until
    MAX_ATTEMPTS, when the delivery is marked failed (and the next one for its key may go)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT d.msg_id, d.payload, d.status, d.attempts, s.url, s.secret "
                "FROM webhook_deliveries d JOIN webhook_subscriptions s "
                "ON s.id = d.subscription_id WHERE d.id = :d"
            ),
            {"d": delivery_id},
        ).one_or_none()
    if row is None or row.status != "pending":
        return  # subscription deleted, or already done
    body = json.dumps(row.payload, separators=(",", ":")).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "softlabels-webhooks",
        "webhook-id": row.msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(row.secret, row.msg_id, ts, body),
    }
    status, error = _post(row.url, headers, body)
    ok = status is not None and 200 <= status < 300
    attempts = row.attempts + 1
    final = "delivered" if ok else ("failed" if attempts >= MAX_ATTEMPTS else "pending")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE webhook_deliveries SET attempts = :a, status = :s, "
                "last_status_code = :c, last_error = :e, "
                "delivered_at = CASE WHEN :ok THEN now() END WHERE id = :d"
            ),
            {"a": attempts, "s": final, "c": status, "e": error, "ok": ok, "d": delivery_id},
        )
    if final == "pending":
        log.warning("webhook delivery %s failed (%s); will retry", delivery_id, error)
        raise DeliveryFailed(error)
