"""Custody: the registry and the double-entry ledger (登记托管)."""

from fastapi import FastAPI

from services.custody import clearing_feed
from services.custody.consumers import consumer_groups, consumer_specs
from services.custody.routes import router
from services.custody.settings import CustodySettings
from shared.app import create_service_app
from shared.runtime import ServiceRuntime


def create_runtime(settings: CustodySettings | None = None) -> ServiceRuntime:
    settings = settings or CustodySettings()
    return ServiceRuntime(
        "custody", settings, consumers=consumer_specs(settings), groups=consumer_groups()
    )


def create_app(settings: CustodySettings | None = None) -> FastAPI:
    return create_service_app(
        create_runtime(settings), title="Custody", routers=[router, clearing_feed.router]
    )
