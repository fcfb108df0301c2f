"""Custody: the registry and the double-entry ledger (登记托管)."""

from fastapi import FastAPI

from shared.app import create_service_app
from shared.config import CommonSettings
from shared.runtime import ServiceRuntime


def create_app(settings: CommonSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("custody", settings or CommonSettings())
    return create_service_app(runtime, title="Custody")
