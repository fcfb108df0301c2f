"""Custody decides a delivery batch of `order.submit` at once (`orders.submit_many`): the
orders are checked in order in memory against balances, holder counts and facts read once.
The result must be what deciding them one at a time, each in its own transaction, gives:
the same reject reasons, reservations and holds, with a later order seeing what an earlier
one reserved and which new holders it admitted under the cap.

Two identical worlds (own members and products) on the real database, the same random flow
of orders: funds and units that run out, a holder cap that fills up, unqualified and unknown
members, a halted product, bad prices and quantities, and orders submitted twice."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.custody import orders, registry
from services.custody.settings import CustodySettings
from shared.contracts import OrderSubmit
from shared.db import unit_of_work
from shared.ids import new_id
from tests.custody.helpers import allocate, deposit, new_member, new_product

Factory = async_sessionmaker[AsyncSession]
MEMBERS = 8
ORDERS = 120


def order_flow(seed: int) -> list[tuple[Any, ...]]:
    """(order index or the index of an earlier order to submit again, member index, product
    index, side, price, quantity)."""
    rng = random.Random(seed)
    flow: list[tuple[Any, ...]] = []
    for i in range(ORDERS):
        if i and rng.random() < 0.05:
            flow.append(("again", rng.randrange(len(flow))))
            continue
        member = rng.randrange(MEMBERS + 1)  # MEMBERS: a member of another partner
        price = rng.choice([0, 99_00, 100_00, 101_00, 101_00, 102_00])
        quantity = rng.choice([0, 1, 5, 10, 20, 40])
        flow.append(("new", member, rng.randrange(3), rng.choice(["BUY", "SELL"]), price, quantity))
    return flow


async def build_world(factory: Factory, settings: CustodySettings) -> tuple[list[str], list[str]]:
    """Members (one unqualified, one of another partner) with little cash, three products:
    one with a holder cap of 3 and two holders, one open, one halted."""
    capped = await new_product(factory, settings, max_holders=3)
    open_ = await new_product(factory, settings, max_holders=1000)
    halted = await new_product(factory, settings, max_holders=1000)
    members = [await new_member(factory, settings) for _ in range(MEMBERS - 1)]
    members.append(await new_member(factory, settings, qualified=False))
    members.append(await new_member(factory, settings, partner="p_other"))
    for i, member in enumerate(members):
        await deposit(factory, member, (i + 1) * 700_00)
    for member in members[:2]:
        await allocate(factory, capped, member, 30)
    for member in members[::3]:
        await allocate(factory, open_, member, 25)
    async with unit_of_work(factory) as session:
        await registry.set_state(session, halted, "halted")
    return members, [capped, open_, halted]


def submits(flow: list[tuple[Any, ...]], members: list[str], codes: list[str]) -> list[OrderSubmit]:
    out: list[OrderSubmit] = []
    for step in flow:
        if step[0] == "again":
            out.append(out[step[1]])
            continue
        _, member, product, side, price, quantity = step
        order_id = new_id("o")
        out.append(
            OrderSubmit(
                order_id=order_id,
                client_order_id=order_id,
                partner_id="p_test",
                member_id=members[member],
                instrument=codes[product],
                side=side,
                price_fen=price,
                quantity=quantity,
                time_in_force="GTC",
            )
        )
    return out


async def world_state(
    factory: Factory, members: list[str], codes: list[str], batch: list[OrderSubmit]
) -> dict[str, Any]:
    member_index = {m: i for i, m in enumerate(members)}
    order_index = {o["order_id"]: i for i, o in enumerate(batch)}
    asset_index = {"CNY": -1} | {c: i for i, c in enumerate(codes)}
    async with factory() as session:
        accounts = (
            await session.execute(
                text(
                    "SELECT owner_id, asset, settled, held, pending_in, pending_out "
                    "FROM custody.accounts WHERE owner_kind = 'member' "
                    "AND owner_id = ANY(CAST(:m AS text[]))"
                ),
                {"m": members},
            )
        ).all()
        reservations = (
            await session.execute(
                text(
                    "SELECT order_id, member_id, instrument, side, price_fen, quantity, held, "
                    "status FROM custody.reservations WHERE order_id = ANY(CAST(:o AS text[]))"
                ),
                {"o": list(order_index)},
            )
        ).all()
        rejected = (
            await session.execute(
                text(
                    "SELECT body FROM custody.outbox WHERE routing_key = 'order.rejected' "
                    "AND convert_from(body, 'UTF8')::jsonb->'payload'->>'member_id' "
                    "= ANY(CAST(:m AS text[]))"
                ),
                {"m": members},
            )
        ).scalars()
        rejections = sorted(
            (order_index[p["order_id"]], p["reason"])
            for p in (orjson.loads(body)["payload"] for body in rejected)
        )
    return {
        "accounts": sorted(
            (member_index[r[0]], asset_index[r[1]], *r[2:]) for r in accounts if r[1] in asset_index
        ),
        "reservations": sorted(
            (order_index[r[0]], member_index[r[1]], asset_index[r[2]], *r[3:]) for r in reservations
        ),
        "rejections": rejections,
    }


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_batch_of_orders_is_decided_as_one_by_one(
    factory: Factory, settings: CustodySettings, seed: int
) -> None:
    flow = order_flow(seed)
    one_members, one_codes = await build_world(factory, settings)
    batch_members, batch_codes = await build_world(factory, settings)
    one_orders = submits(flow, one_members, one_codes)
    batch_orders = submits(flow, batch_members, batch_codes)

    one_reasons = []
    for order in one_orders:
        async with unit_of_work(factory) as session:
            one_reasons.append(await orders.submit(session, order, settings.matching_shards))
    async with unit_of_work(factory) as session:
        batch_reasons = await orders.submit_many(
            session, [(o, None) for o in batch_orders], settings.matching_shards
        )

    assert batch_reasons == one_reasons
    expected = await world_state(factory, one_members, one_codes, one_orders)
    assert await world_state(factory, batch_members, batch_codes, batch_orders) == expected
    # The flow reached every kind of decision.
    assert {
        None,
        "INSUFFICIENT_FUNDS",
        "INSUFFICIENT_UNITS",
        "HOLDER_LIMIT_REACHED",
        "NOT_QUALIFIED",
        "UNKNOWN_MEMBER",
        "INSTRUMENT_NOT_TRADING",
        "INVALID_ORDER",
    } <= set(one_reasons), set(one_reasons)
