"""Order entry's write pool: a request that cannot get a connection in time is refused as
overload (503) and writes nothing, rather than waiting without end."""

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway import order_writes
from services.gateway.order_writes import OrderWrites
from shared.errors import ProblemError


async def test_a_request_that_finds_every_connection_busy_is_refused_as_overload(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(order_writes, "ACQUIRE_TIMEOUT_SECONDS", 0.2)
    writes = OrderWrites(engine.url.render_as_string(hide_password=False), max_connections=1)
    try:
        assert await writes.by_client_ids("p_nobody", {"c-1"}) == {}
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with writes._acquire():
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        with pytest.raises(ProblemError) as refused:
            await writes.by_client_ids("p_nobody", {"c-1"})
        assert (refused.value.status, refused.value.code) == (503, "SERVICE_UNAVAILABLE")
        release.set()
        await holder
        assert await writes.by_client_ids("p_nobody", {"c-1"}) == {}
    finally:
        await writes.close()
