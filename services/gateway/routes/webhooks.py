"""Callbacks (partner): register URLs for order, trade, settlement and withdrawal events."""

from fastapi import APIRouter, Response

from services.gateway import repositories as repo
from services.gateway.routes.common import PROBLEMS, Gw, Partner, json_response
from services.gateway.schemas import Webhook, WebhookCreate, WebhookPage
from shared.clock import rfc3339
from shared.ids import new_id

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEMS)


@router.post("", status_code=201, response_model=Webhook)
async def register(body: WebhookCreate, gw: Gw, partner: Partner) -> Response:
    """Events are POSTed as JSON signed with the partner's secret (X-Api-Key, X-Timestamp,
    X-Signature over the callback's path), retried with backoff until a 2xx, each with an
    ``event_id`` (also in X-Event-Id) for de-duplication."""
    webhook_id = new_id("wh")
    events = sorted(set(body.events))
    async with gw.sessions()() as session, session.begin():
        created_at = await repo.insert_webhook(
            session,
            webhook_id=webhook_id,
            partner_id=partner.partner_id,
            url=body.url,
            events=events,
        )
    return json_response(
        {
            "webhook_id": webhook_id,
            "url": body.url,
            "events": events,
            "created_at": rfc3339(created_at),
        },
        201,
    )


@router.get("", response_model=WebhookPage)
async def list_webhooks(gw: Gw, partner: Partner) -> Response:
    async with gw.sessions()() as session:
        rows = await repo.list_webhooks(session, partner.partner_id)
    items = [
        {
            "webhook_id": r.webhook_id,
            "url": r.url,
            "events": list(r.events),
            "created_at": rfc3339(r.created_at),
        }
        for r in rows
    ]
    return json_response({"items": items, "next_cursor": None})
