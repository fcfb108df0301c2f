"""Gateway: the public REST API for partner platforms and staff."""

from fastapi import FastAPI

from shared.app import create_service_app
from shared.config import CommonSettings
from shared.runtime import ServiceRuntime


def create_app(settings: CommonSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("gateway", settings or CommonSettings())
    return create_service_app(runtime, title="Exchange gateway")
