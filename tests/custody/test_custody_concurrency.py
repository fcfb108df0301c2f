"""Concurrency: reservations racing for one member's cash never overdraw it; trades,
deposits and a settlement batch all touching the fee income account never deadlock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody import cash, settlement
from services.custody.schemas import BatchTrade, SettlementBatchRequest, WithdrawalCreate
from services.custody.settings import CustodySettings
from shared.db import make_engine, make_session_factory, unit_of_work
from shared.errors import ProblemError
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
)
from tests.support import env

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def wide() -> AsyncIterator[Factory]:
    """A pool wide enough for real parallelism."""
    engine = make_engine(env.DATABASE_URL, pool_size=20)
    yield make_session_factory(engine)
    await engine.dispose()


async def test_racing_reservations_and_withdrawals_never_overdraw_one_member(
    wide: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    products = [await new_product(wide, settings) for _ in range(6)]
    member = await new_member(wide, settings)
    await deposit(wide, member, 1000_00)

    async def order(i: int) -> bool:
        _, reason = await submit(wide, settings, member, products[i % 6], "BUY", 95_00, 1)
        assert reason in (None, "INSUFFICIENT_FUNDS")
        return reason is None

    async def withdraw() -> bool:
        try:
            async with unit_of_work(wide) as session:
                await cash.request_withdrawal(
                    session, member, None, WithdrawalCreate(amount="50.00")
                )
        except ProblemError as exc:
            if exc.code != "INSUFFICIENT_FUNDS":
                raise
            return False
        return True

    results = await asyncio.gather(*[order(i) for i in range(60)], *[withdraw() for _ in range(10)])
    orders_ok, withdrawals_ok = sum(results[:60]), sum(results[60:])
    balance = await cash_fen(wide, member)
    assert balance["held"] == orders_ok * 100_00 + withdrawals_ok * 50_00
    assert balance["available"] >= 0
    assert balance["held"] <= 1000_00
    assert orders_ok < 60
    # every refusal was right: nothing that was refused would still fit
    assert balance["available"] < 100_00
    if withdrawals_ok < 10:
        assert balance["available"] < 50_00
    await assert_ledger_ok(engine)


async def test_trades_deposits_and_settlement_against_the_fee_account_do_not_deadlock(
    wide: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    pairs = 24
    code = await new_product(wide, settings, issue_size=100_000)
    buyers = [await new_member(wide, settings) for _ in range(pairs)]
    sellers = [await new_member(wide, settings) for _ in range(pairs)]
    for b, s in zip(buyers, sellers, strict=True):
        await deposit(wide, b, 10_000_00)
        await allocate(wide, code, s, 100)
    first_day, second_day = past_date(), past_date()
    orders = []
    for b, s in zip(buyers, sellers, strict=True):
        buy, r1 = await submit(wide, settings, b, code, "BUY", 100_00, 20)
        sell, r2 = await submit(wide, settings, s, code, "SELL", 100_00, 20)
        assert r1 is None
        assert r2 is None
        orders.append((buy, sell, b, s))
    day_one = []
    for i, (buy, sell, b, s) in enumerate(orders[: pairs // 2]):
        event = trade_event(i + 1, buy, sell, b, s, 100_00, 10, first_day)
        await book(wide, code, [event])
        day_one.append(
            BatchTrade(
                trade_id=event["trade_id"],
                instrument=code,
                price_fen=100_00,
                quantity=10,
                buyer_member_id=b,
                seller_member_id=s,
                buyer_fee_fen=200,
                seller_fee_fen=200,
            )
        )

    async def settle() -> None:
        async with unit_of_work(wide) as session:
            await settlement.apply_batch(
                session,
                SettlementBatchRequest(
                    batch_id=new_id("b"), business_date=first_day, trades=day_one
                ),
                settings,
            )

    started = time.perf_counter()
    await asyncio.gather(
        settle(),
        *[
            book(wide, code, [trade_event(100 + i, buy, sell, b, s, 100_00, 5, second_day)])
            for i, (buy, sell, b, s) in enumerate(orders)
        ],
        *[deposit(wide, m, 1_00) for m in buyers + sellers],
    )
    elapsed = time.perf_counter() - started
    print(
        f"\n{pairs} trades + {2 * pairs} deposits + 1 batch concurrently: {elapsed * 1000:.0f} ms"
    )
    for b in buyers[: pairs // 2]:
        assert (await cash_fen(wide, b))["settled"] == 10_000_00 + 1_00 - 1000_00 - 200
    await assert_ledger_ok(engine)


async def test_concurrent_new_holders_never_pass_the_holder_cap(
    wide: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    """New holders racing for the last places of a capped product, while existing holders
    and candidates keep buying (the shared-lock path) and candidates cancel: the cap holds
    for holders and possible holders alike."""
    cap = 6
    code = await new_product(wide, settings, max_holders=cap)
    holders = [await new_member(wide, settings) for _ in range(2)]
    for h in holders:
        await allocate(wide, code, h, 10)
        await deposit(wide, h, 10_000_00)
    candidate = await new_member(wide, settings)
    await deposit(wide, candidate, 10_000_00)
    first, reason = await submit(wide, settings, candidate, code, "BUY", 100_00, 1)
    assert reason is None  # holders 2 + candidates 1: three places left
    newcomers = [await new_member(wide, settings) for _ in range(12)]
    for m in newcomers:
        await deposit(wide, m, 1_000_00)

    async def buy(member: str) -> str | None:
        _, reason = await submit(wide, settings, member, code, "BUY", 100_00, 1)
        return reason

    async def cancel_first() -> None:
        await book(wide, code, [{"type": "OrderCancelled", "order_id": first, "reason": "X"}])

    results = await asyncio.gather(
        *[buy(m) for m in newcomers],
        *[buy(h) for h in holders for _ in range(3)],
        *[buy(candidate) for _ in range(3)],
        cancel_first(),
    )
    new_results = results[: len(newcomers)]
    assert set(new_results) <= {None, "HOLDER_LIMIT_REACHED"}
    assert all(r is None for r in results[len(newcomers) : len(newcomers) + 6])
    assert set(results[len(newcomers) + 6 : len(newcomers) + 9]) <= {None, "HOLDER_LIMIT_REACHED"}
    async with wide() as session:
        possible = (
            await session.execute(
                text(
                    """
                    SELECT count(*) FROM (
                        SELECT owner_id FROM custody.accounts
                        WHERE asset = :c AND owner_kind = 'member'
                          AND (settled > 0 OR pending_in > 0)
                        UNION
                        SELECT member_id FROM custody.reservations
                        WHERE instrument = :c AND side = 'BUY' AND status = 'open'
                    ) x
                    """
                ),
                {"c": code},
            )
        ).scalar_one()
    assert possible <= cap
    # at least the three free places went to someone (newcomers or the candidate again)
    assert new_results.count(None) >= cap - 3 - 1
    await assert_ledger_ok(engine)
