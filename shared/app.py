"""The FastAPI application every service is built on: health, readiness, metrics,
correlation ids and problem documents."""

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.errors import install_problem_handlers
from shared.ids import new_id
from shared.logging import configure_logging, correlation_id_var
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS
from shared.runtime import ServiceRuntime

CORRELATION_HEADER = "X-Correlation-Id"


def create_service_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
    description: str = "",
) -> FastAPI:
    settings = runtime.settings
    configure_logging(runtime.name, settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title,
        description=description,
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)

    @app.middleware("http")
    async def correlate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        correlation_id = request.headers.get(CORRELATION_HEADER) or new_id("c")
        token = correlation_id_var.set(correlation_id[:128])
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            correlation_id_var.reset(token)
        HTTP_LATENCY.labels(runtime.name, request.method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(runtime.name, request.method, str(response.status_code)).inc()
        response.headers[CORRELATION_HEADER] = correlation_id
        return response

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok", "service": runtime.name}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        """The database and the broker are reachable."""
        readiness = await runtime.readiness()
        return JSONResponse(
            {"ready": readiness.ready, "service": runtime.name, "checks": readiness.checks},
            status_code=200 if readiness.ready else 503,
        )

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
