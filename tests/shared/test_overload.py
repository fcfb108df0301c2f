"""When every pooled database connection is busy a request gets 503 with Retry-After, not 500."""

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.errors import install_problem_handlers
from tests.support.env import BASE_DATABASE_URL


async def test_an_exhausted_connection_pool_answers_503_with_retry_after() -> None:
    engine = create_async_engine(
        f"{BASE_DATABASE_URL}/postgres", pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/probe")
    async def probe() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"one": int((await conn.execute(text("SELECT 1"))).scalar_one())}

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            async with engine.connect() as held:  # the pool's only connection
                await held.execute(text("SELECT 1"))
                busy = await client.get("/probe")
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1"
            assert busy.headers["content-type"] == "application/problem+json"
            assert busy.json()["code"] == "SERVICE_UNAVAILABLE"
            free = await client.get("/probe")
            assert (free.status_code, free.json()) == (200, {"one": 1})
    finally:
        await engine.dispose()
