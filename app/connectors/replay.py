"""Remember the Standard Webhooks message ids a connector accepted, so a replay changes nothing.

A captured event keeps a valid signature for the whole timestamp tolerance; its `webhook-id` is
what tells a replay from a new event (the spec asks receivers to use it for idempotency). Ids are
kept for twice the longest tolerance, then purged: a replay that late is refused as stale.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.webhooks.signing import MAX_TOLERANCE_S

KEEP_S = 2 * MAX_TOLERANCE_S


def first_delivery(session: Session, project_id: int, tool: str, msg_id: str) -> bool:
    """Record `msg_id` in the caller's transaction; False if it was recorded before.

    A concurrent delivery of the same id waits on this row's insert and then sees it."""
    session.execute(
        text("DELETE FROM webhook_messages WHERE received_at < now() - make_interval(secs => :k)"),
        {"k": KEEP_S},
    )
    inserted = session.execute(
        text(
            "INSERT INTO webhook_messages (project_id, tool, msg_id) VALUES (:p, :t, :m) "
            "ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {"p": project_id, "t": tool, "m": msg_id},
    ).first()
    return inserted is not None
