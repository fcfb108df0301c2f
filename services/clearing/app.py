"""Clearing: business dates, trade capture, fees, end-of-day settlement and reconciliation."""

from fastapi import FastAPI

from services.clearing.capture import consumer_specs
from services.clearing.eod import EodRunner
from services.clearing.routes import router
from services.clearing.settings import ClearingSettings
from shared.app import create_service_app
from shared.runtime import ServiceRuntime


def create_app(settings: ClearingSettings | None = None) -> FastAPI:
    settings = settings or ClearingSettings()
    runner = EodRunner(settings)
    runtime = ServiceRuntime(
        "clearing",
        settings,
        consumers=consumer_specs(
            settings.matching_shards,
            batched=settings.capture_batch,
            linger_seconds=settings.capture_linger_seconds,
        ),
        components=[runner],
    )
    app = create_service_app(runtime, title="Clearing", routers=[router])
    app.state.eod_runner = runner
    return app
