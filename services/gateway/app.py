"""Gateway: the public REST API for partner platforms and staff (docs/spec/api.md)."""

from fastapi import FastAPI

from services.gateway.context import Gateway
from services.gateway.middleware import GatewayMiddleware
from services.gateway.routes import (
    admin,
    clearing,
    console,
    market,
    members,
    orders,
    reference,
    webhooks,
)
from services.gateway.settings import GatewaySettings
from shared.app import create_service_app
from shared.config import CommonSettings

DESCRIPTION = """The exchange's public surface for partner platforms and staff.

**Partners** sign every request: `X-Api-Key`, `X-Timestamp` (unix epoch milliseconds,
within 30 s of the server clock) and `X-Signature` = hex(HMAC-SHA256(secret, timestamp +
"\\n" + METHOD + "\\n" + path_with_query + "\\n" + hex(SHA-256(body)))).
**Staff** send `Authorization: Bearer <token>` (roles operator, auditor, admin).

Errors are RFC 9457 problem documents with a stable `code`. Every POST takes an
`Idempotency-Key`. Lists take `limit` (default 100, max 1000) and `cursor`.

**WebSocket** `GET /v1/ws`: sign the handshake like `GET /v1/ws` with an empty body, then
send `{"op": "subscribe", "channels": ["depth:CODE", "trades:CODE", "orders"]}`; messages
arrive as `{"channel", "data"}`.

**Callbacks** are POSTed signed the same way with the partner's secret, with an
`event_id` (also `X-Event-Id`), retried with backoff until a 2xx."""


def create_app(settings: CommonSettings | None = None) -> FastAPI:
    if settings is None:
        gateway_settings = GatewaySettings()
    elif isinstance(settings, GatewaySettings):
        gateway_settings = settings
    else:
        gateway_settings = GatewaySettings(**settings.model_dump())
    gateway = Gateway(gateway_settings)
    app = create_service_app(
        gateway.runtime,
        title="Exchange gateway",
        description=DESCRIPTION,
        routers=[
            admin.router,
            clearing.router,
            reference.router,
            members.router,
            orders.router,
            market.router,
            webhooks.router,
            console.router,
        ],
    )
    app.state.gateway = gateway
    app.add_middleware(GatewayMiddleware, gateway=gateway)
    return app
