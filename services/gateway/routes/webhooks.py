"""Callbacks (partner): register URLs for order, trade, settlement and withdrawal events."""

from urllib.parse import urlsplit

from fastapi import APIRouter, Response

from services.gateway import repositories as repo
from services.gateway.context import Gateway
from services.gateway.routes.common import PROBLEMS, Gw, Partner, json_response
from services.gateway.schemas import Webhook, WebhookCreate, WebhookPage
from shared.clock import rfc3339
from shared.errors import ProblemError
from shared.ids import new_id

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEMS)


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in ("localhost", "0.0.0.0", "::1", "::"):
        host = "127.0.0.1"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = -1
    return host, port


def _internal(gw: Gateway, url: str) -> bool:
    """A callback to custody, matching, clearing or the gateway itself would let a partner
    make the exchange call its own internal routes (server-side request forgery)."""
    target = _origin(url)
    services = ("gateway", "custody", "matching", "clearing")
    return any(_origin(gw.settings.url_of(s)) == target for s in services)


@router.post("", status_code=201, response_model=Webhook)
async def register(body: WebhookCreate, gw: Gw, partner: Partner) -> Response:
    """Events are POSTed as JSON signed with the partner's secret (X-Api-Key, X-Timestamp,
    X-Signature over the callback's path), retried with backoff until a 2xx, each with an
    ``event_id`` (also in X-Event-Id) for de-duplication."""
    if _internal(gw, body.url):
        raise ProblemError(
            422, "WEBHOOK_URL_FORBIDDEN", "callbacks may not target the exchange's own services"
        )
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
