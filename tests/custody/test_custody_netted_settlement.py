"""The netted settlement batch (clearing's per-member netting with digests of its trade set
and units): custody checks it against the same aggregates of its own obligations, refuses
any difference without changing anything, applies a matching day once, and answers a repeat
with the stored result. Through the real route, on the real database."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody.app import create_runtime
from services.custody.clearing_feed import router as clearing_router
from services.custody.routes import router
from services.custody.settings import CustodySettings
from shared.app import create_service_app
from shared.ids import new_id
from tests.custody.helpers import (
    allocate,
    assert_ledger_ok,
    book,
    cash_fen,
    deposit,
    new_member,
    new_product,
    past_date,
    submit,
    trade_event,
    units,
)

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def client(settings: CustodySettings, factory: Factory) -> AsyncIterator[httpx.AsyncClient]:
    runtime = create_runtime(settings)
    runtime.session_factory = factory
    app = create_service_app(runtime, title="Custody", routers=[router, clearing_router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://custody") as client:
        yield client


def digest(rows: list[str]) -> str:
    """The digest written out again: the sum of each row's md5 cut to 60 bits."""
    return str(sum(int(hashlib.md5(r.encode()).hexdigest()[:15], 16) for r in rows))


async def test_netted_batch_is_checked_against_custodys_obligations(
    client: httpx.AsyncClient, engine: AsyncEngine, factory: Factory, settings: CustodySettings
) -> None:
    code = await new_product(factory, settings)
    buyer = await new_member(factory, settings)
    seller = await new_member(factory, settings)
    await deposit(factory, buyer, 5000_00)
    await allocate(factory, code, seller, 100)
    day = past_date()
    buy, reason = await submit(factory, settings, buyer, code, "BUY", 100_00, 10)
    assert reason is None
    sell, reason = await submit(factory, settings, seller, code, "SELL", 100_00, 10)
    assert reason is None
    first = trade_event(1, buy, sell, buyer, seller, 100_00, 4, day)
    second = trade_event(2, buy, sell, buyer, seller, 100_00, 6, day)
    await book(factory, code, [first, second])
    # Fees: 2.00 per side per trade (each below 50,000.00; per-order total 4.00 < 5.00).
    trades = [
        f"{t['trade_id']}|{code}|10000|{t['quantity']}|{buyer}|{seller}|200|200"
        for t in (first, second)
    ]
    batch: dict[str, Any] = {
        "batch_id": new_id("b"),
        "business_date": day.isoformat(),
        "trade_count": 2,
        "gross_amount_fen": 1000_00,
        "fee_total_fen": 800,
        "trades_digest": digest(trades),
        "units_digest": digest([f"{buyer}|{code}|10", f"{seller}|{code}|-10"]),
        "members": [
            {"member_id": buyer, "net_cash_fen": -1000_00, "fees_fen": 400},
            {"member_id": seller, "net_cash_fen": 1000_00, "fees_fen": 400},
        ],
    }
    before = await cash_fen(factory, buyer)
    wrong_batches = [
        {**batch, "trades_digest": digest(trades[:1])},
        {**batch, "units_digest": digest([f"{buyer}|{code}|9", f"{seller}|{code}|-9"])},
        {**batch, "trade_count": 1},
        {
            **batch,
            "members": [
                {"member_id": buyer, "net_cash_fen": -1000_00, "fees_fen": 300},
                {"member_id": seller, "net_cash_fen": 1000_00, "fees_fen": 500},
            ],
        },
    ]
    for wrong in wrong_batches:
        refused = await client.post("/internal/clearing/settlement-batches", json=wrong)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "SETTLEMENT_MISMATCH"
    assert await cash_fen(factory, buyer) == before

    applied = await client.post("/internal/clearing/settlement-batches", json=batch)
    assert applied.status_code == 201, applied.text
    result = applied.json()
    assert result["trade_count"] == 2
    by_member = {m["member_id"]: m for m in result["members"]}
    assert by_member[buyer]["net_cash"] == "-1000.00"
    assert by_member[seller]["net_after_fees"] == "996.00"
    assert "units" not in by_member[buyer]  # clearing holds the units
    assert (await cash_fen(factory, buyer))["settled"] == 5000_00 - 1000_00 - 400
    assert (await cash_fen(factory, buyer))["pending_out"] == 0
    assert (await units(factory, buyer, code))["settled"] == 10
    assert (await units(factory, seller, code))["settled"] == 90

    repeat = await client.post("/internal/clearing/settlement-batches", json=batch)
    assert repeat.status_code == 200
    assert repeat.json() == result
    other = await client.post(
        "/internal/clearing/settlement-batches", json={**batch, "batch_id": new_id("b")}
    )
    assert other.json()["code"] == "ALREADY_SETTLED"
    assert (await cash_fen(factory, buyer))["settled"] == 5000_00 - 1000_00 - 400
    await assert_ledger_ok(engine)
