"""Building blocks for custody tests: members, products, money and orders against the real
database, through custody's own service functions."""

from __future__ import annotations

import itertools
import secrets
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody import book_events, cash, orders, registry, repository, views
from services.custody.schemas import (
    Allocation,
    AllocationRequest,
    DepositCreate,
    InstrumentCreate,
    MemberCreate,
)
from services.custody.settings import CustodySettings
from services.custody.verify import run_checks
from shared.contracts import OrderSubmit
from shared.db import unit_of_work
from shared.ids import new_id
from shared.money import format_fen
from tests.support import env
from tests.support.products import instrument_body as product_body

Factory = async_sessionmaker[AsyncSession]

_dates = itertools.count(1)


def custody_settings() -> CustodySettings:
    return CustodySettings(
        database_url=env.DATABASE_URL,
        amqp_url=env.AMQP_URL,
        broker_prefix=env.BROKER_PREFIX,
        log_format="console",
    )


def past_date() -> date:
    """A business date of its own for one test's trades, long closed."""
    return date(2001, 1, 1) + timedelta(days=next(_dates))


def unique_code() -> str:
    return "T" + secrets.token_hex(5).upper()


async def new_member(
    factory: Factory,
    settings: CustodySettings,
    *,
    partner: str = "p_test",
    qualified: bool = True,
    risk: str = "C5",
) -> str:
    async with unit_of_work(factory) as session:
        row = await registry.create_member(
            session,
            MemberCreate(
                partner_id=partner,
                external_ref=new_id("x"),
                name="Test Member",
                kind="individual",
                qualified=qualified,
                risk_tolerance=risk,  # type: ignore[arg-type]
            ),
            settings,
        )
        return str(row.member_id)


def instrument_body(code: str, **overrides: Any) -> InstrumentCreate:
    return InstrumentCreate(**product_body(code, **overrides))


async def new_product(factory: Factory, settings: CustodySettings, **overrides: Any) -> str:
    code = unique_code()
    async with unit_of_work(factory) as session:
        await registry.create_instrument(session, instrument_body(code, **overrides), settings)
    return code


async def deposit(factory: Factory, member_id: str, fen: int) -> None:
    async with unit_of_work(factory) as session:
        await cash.deposit(
            session,
            DepositCreate(member_id=member_id, amount=format_fen(fen), bank_reference=new_id("bk")),
        )


async def allocate(factory: Factory, code: str, member_id: str, quantity: int) -> None:
    async with unit_of_work(factory) as session:
        await registry.allocate(
            session,
            code,
            AllocationRequest(allocations=[Allocation(member_id=member_id, quantity=quantity)]),
        )


async def submit(
    factory: Factory,
    settings: CustodySettings,
    member_id: str,
    code: str,
    side: str,
    price_fen: int,
    quantity: int,
    *,
    order_id: str | None = None,
    partner: str = "p_test",
) -> tuple[str, str | None]:
    """Submit an order through custody; returns (order_id, reject reason or None)."""
    order_id = order_id or new_id("o")
    async with unit_of_work(factory) as session:
        reason = await orders.submit(
            session,
            OrderSubmit(
                order_id=order_id,
                client_order_id=order_id,
                partner_id=partner,
                member_id=member_id,
                instrument=code,
                side=side,  # type: ignore[typeddict-item]
                price_fen=price_fen,
                quantity=quantity,
                time_in_force="GTC",
            ),
            settings.matching_shards,
        )
    return order_id, reason


def trade_event(
    seq: int,
    buy_order: str,
    sell_order: str,
    buyer: str,
    seller: str,
    price_fen: int,
    quantity: int,
    business_date: date,
    *,
    taker_side: str = "BUY",
    trade_id: str | None = None,
) -> dict[str, Any]:
    taker_is_buy = taker_side == "BUY"
    return {
        "type": "Trade",
        "seq": seq,
        "trade_id": trade_id or new_id("t"),
        "maker_order_id": sell_order if taker_is_buy else buy_order,
        "taker_order_id": buy_order if taker_is_buy else sell_order,
        "maker_member_id": seller if taker_is_buy else buyer,
        "taker_member_id": buyer if taker_is_buy else seller,
        "taker_side": taker_side,
        "price_fen": price_fen,
        "quantity": quantity,
        "business_date": business_date.isoformat(),
    }


async def book(factory: Factory, code: str, events: list[dict[str, Any]]) -> None:
    async with unit_of_work(factory) as session:
        await book_events.apply_book_messages(session, [(code, events)])


async def balances(factory: Factory, member_id: str) -> dict[str, Any]:
    async with factory() as session:
        return views.balances(member_id, await repository.member_accounts(session, member_id))


async def cash_fen(factory: Factory, member_id: str) -> dict[str, int]:
    async with factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT settled, held, pending_in, pending_out FROM custody.accounts "
                    "WHERE owner_kind = 'member' AND owner_id = :m AND asset = 'CNY'"
                ),
                {"m": member_id},
            )
        ).one()
    return {
        "settled": row.settled,
        "held": row.held,
        "pending_in": row.pending_in,
        "pending_out": row.pending_out,
        "available": row.settled - row.held - row.pending_out,
    }


async def units(factory: Factory, member_id: str, code: str) -> dict[str, int]:
    async with factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT settled, held, pending_in, pending_out FROM custody.accounts "
                    "WHERE owner_kind = 'member' AND owner_id = :m AND asset = :c"
                ),
                {"m": member_id, "c": code},
            )
        ).first()
    if row is None:
        return {"settled": 0, "held": 0, "pending_in": 0, "pending_out": 0, "available": 0}
    return {
        "settled": row.settled,
        "held": row.held,
        "pending_in": row.pending_in,
        "pending_out": row.pending_out,
        "available": row.settled - row.held - row.pending_out,
    }


async def assert_ledger_ok(engine: AsyncEngine) -> None:
    failed = [c for c in await run_checks(engine) if not c.ok]
    assert not failed, "; ".join(f"{c.name}: {c.detail}" for c in failed)
