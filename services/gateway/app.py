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

DESCRIPTION = """The exchange's public surface for partner platforms (HMAC-signed requests)
and staff (bearer tokens). Errors are RFC 9457 problem documents with a stable `code`."""


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
