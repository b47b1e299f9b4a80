"""/v1/projects/{p}/webhooks: outbound webhook subscriptions (admin) and their delivery log.
Sending is app/webhooks/deliver.py's, in the worker."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from sqlalchemy import select

from app.api.access import require
from app.api.connector_schemas import (
    DeliveryList,
    DeliveryOut,
    SubscriptionIn,
    SubscriptionList,
    SubscriptionOut,
)
from app.api.deps import ProjectDep, ServicesDep, SessionDep
from app.db.models import Project, WebhookDelivery, WebhookSubscription
from app.errors import NotFound, ValidationFailed
from app.outbound import Policy, refuse_url
from app.webhooks.signing import new_secret

router = APIRouter(prefix="/v1/projects/{project}/webhooks", tags=["webhooks"])
SubId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The subscription's id.")]


def _out(s: WebhookSubscription, secret: str | None = None) -> SubscriptionOut:
    return SubscriptionOut(
        id=s.id,
        url=s.url,
        events=s.events,
        settle_votes=s.settle_votes,
        settle_entropy=s.settle_entropy,
        active=s.active,
        created_at=s.created_at,
        secret=secret,
    )


def _get(session: SessionDep, project: Project, sub_id: int) -> WebhookSubscription:
    s = session.scalars(
        select(WebhookSubscription).where(
            WebhookSubscription.id == sub_id, WebhookSubscription.project_id == project.id
        )
    ).one_or_none()
    if s is None:
        raise NotFound(f"No webhook subscription {sub_id} in project {project.name!r}.")
    return s


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionOut,
    dependencies=[Depends(require("admin"))],
)
def create_subscription(
    project: ProjectDep, body: SubscriptionIn, session: SessionDep, services: ServicesDep
) -> SubscriptionOut:
    """Subscribe a URL to events. The signing secret (`whsec_...`) is in this answer only:
    verify each delivery's `webhook-signature` with it (Standard Webhooks)."""
    if "item.settled" in body.events and body.settle_votes is None and body.settle_entropy is None:
        raise ValidationFailed(
            "item.settled needs settle_votes or settle_entropy.",
            errors=[
                {"index": None, "field": "settle_votes", "reason": "required for item.settled"}
            ],
        )
    # Checked again at each delivery (DNS can change); refused here to say so at once.
    refuse_url(str(body.url), Policy.from_settings(services.settings))
    secret = new_secret()
    s = WebhookSubscription(
        project_id=project.id,
        url=str(body.url),
        secret=secret,
        events=list(body.events),
        settle_votes=body.settle_votes,
        settle_entropy=body.settle_entropy,
    )
    session.add(s)
    session.flush()
    session.refresh(s)
    return _out(s, secret)


@router.get("", response_model=SubscriptionList, dependencies=[Depends(require("admin"))])
def list_subscriptions(project: ProjectDep, session: SessionDep) -> SubscriptionList:
    rows = session.scalars(
        select(WebhookSubscription)
        .where(WebhookSubscription.project_id == project.id)
        .order_by(WebhookSubscription.id)
    ).all()
    return SubscriptionList(subscriptions=[_out(s) for s in rows])


@router.delete("/{subscription_id}", status_code=204, dependencies=[Depends(require("admin"))])
def delete_subscription(project: ProjectDep, subscription_id: SubId, session: SessionDep) -> None:
    """Stop sending; its pending deliveries are dropped with it."""
    session.delete(_get(session, project, subscription_id))


@router.get(
    "/{subscription_id}/deliveries",
    response_model=DeliveryList,
    dependencies=[Depends(require("admin"))],
)
def list_deliveries(
    project: ProjectDep,
    subscription_id: SubId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """The delivery log, newest first: status (pending, delivered, failed), attempts, last
    status code and error."""
    _get(session, project, subscription_id)
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    ).all()
    return DeliveryList(
        deliveries=[
            DeliveryOut(
                id=d.id,
                msg_id=d.msg_id,
                event=d.event,
                status=d.status,
                attempts=d.attempts,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                created_at=d.created_at,
                delivered_at=d.delivered_at,
            )
            for d in rows
        ]
    )
