"""Matching: one price-time priority book per product, sequencing and market data."""

from fastapi import FastAPI

from shared.app import create_service_app
from shared.config import CommonSettings
from shared.runtime import ServiceRuntime


def create_app(settings: CommonSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("matching", settings or CommonSettings())
    return create_service_app(runtime, title="Matching")
