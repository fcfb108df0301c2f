"""Custody's book path applies a delivery batch of book messages at once (one statement
per kind of change). Its result must be what applying the same messages one at a time, each
in its own transaction, gives: a later message of a batch builds on what an earlier one did
to the same orders, accounts and holder counts, and a trade seen before is skipped.

Two identical worlds (own members and product, the same random order flow through a real
matching book) on the real database: one applies every book message in a transaction of its
own, the other all of them in one batch, as the consumer does with a full prefetch."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.custody import book_events
from services.custody.settings import CustodySettings
from services.matching.domain import OrderBook
from services.matching.wire import event_to_wire
from shared.db import unit_of_work
from tests.custody.helpers import allocate, deposit, new_member, new_product, past_date, submit

Factory = async_sessionmaker[AsyncSession]
MEMBERS = 4
STEPS = 160

pytestmark = pytest.mark.slow


def order_flow(seed: int) -> list[tuple[Any, ...]]:
    """A seeded flow of book commands by member index: new (GTC, DAY or IOC), cancel, amend
    down, a halt and resume, and the day's roll at the end (expiring DAY orders)."""
    rng = random.Random(seed)
    flow: list[tuple[Any, ...]] = []
    placed = 0
    for step in range(STEPS):
        roll = rng.random()
        if placed and roll < 0.2:
            flow.append(("cancel", rng.randrange(placed)))
        elif placed and roll < 0.3:
            flow.append(("amend", rng.randrange(placed), rng.randint(1, 5)))
        elif step == STEPS // 2:
            flow += [("halt",), ("resume",)]
        else:
            flow.append(
                (
                    "new",
                    placed,
                    rng.randrange(MEMBERS),
                    rng.choice(["BUY", "SELL"]),
                    rng.randint(99_00, 101_00),
                    rng.randint(1, 20),
                    rng.choice(["GTC", "GTC", "DAY", "IOC"]),
                )
            )
            placed += 1
    flow.append(("roll",))
    return flow


async def build_world(
    factory: Factory, settings: CustodySettings, flow: list[tuple[Any, ...]], trade_date: Any
) -> tuple[str, list[str], list[str], list[list[dict[str, Any]]]]:
    """Members with ample cash and units, every order reserved by custody, and the book
    messages the flow produces (each message the events of one book command)."""
    code = await new_product(factory, settings, max_holders=1000)
    members = [await new_member(factory, settings) for _ in range(MEMBERS)]
    for member in members:
        await deposit(factory, member, 100_000_000_00)
        await allocate(factory, code, member, 100_000)
    book = OrderBook(code, 1, 1, 1, 1, 10**9, trade_date)
    order_ids: list[str] = []
    messages: list[list[dict[str, Any]]] = []
    for command in flow:
        if command[0] == "new":
            _, _, member, side, price, quantity, tif = command
            order_id, reason = await submit(
                factory, settings, members[member], code, side, price, quantity
            )
            assert reason is None, reason  # ample funds: custody accepts every order
            order_ids.append(order_id)
            events = book.submit(order_id, members[member], side, price, quantity, tif)
        elif command[0] == "cancel":
            events = book.cancel(order_ids[command[1]])
        elif command[0] == "amend":
            view = book.get_order(order_ids[command[1]])
            if view is None or view.remaining_quantity <= command[2]:
                continue
            events = book.amend(order_ids[command[1]], command[2])
        elif command[0] == "halt":
            events = book.halt()
        elif command[0] == "resume":
            events = book.resume()
        else:
            events = book.roll_day(trade_date + datetime.timedelta(days=1))
        messages.append([event_to_wire(e) for e in events])
    # The same trades again in a later message (a redelivered bundle under a new id).
    messages.append([e for m in messages for e in m if e["type"] == "Trade"][:3])
    return code, members, order_ids, messages


async def world_state(
    factory: Factory, code: str, members: list[str], order_ids: list[str]
) -> dict[str, Any]:
    """Everything the book path wrote, with ids replaced by their index in the world."""
    member_index = {m: i for i, m in enumerate(members)}
    order_index = {o: i for i, o in enumerate(order_ids)}
    async with factory() as session:
        accounts = (
            await session.execute(
                text(
                    "SELECT owner_id, asset = 'CNY', settled, held, pending_in, pending_out "
                    "FROM custody.accounts WHERE owner_kind = 'member' "
                    "AND owner_id = ANY(CAST(:m AS text[])) AND asset IN ('CNY', :c)"
                ),
                {"m": members, "c": code},
            )
        ).all()
        reservations = (
            await session.execute(
                text(
                    "SELECT order_id, remaining, fees_charged, held, status, close_reason "
                    "FROM custody.reservations WHERE order_id = ANY(CAST(:o AS text[]))"
                ),
                {"o": order_ids},
            )
        ).all()
        trades = (
            await session.execute(
                text(
                    "SELECT trade_id, price_fen, quantity, buyer_member_id, seller_member_id, "
                    "buyer_order_id, seller_order_id, buyer_fee_fen, seller_fee_fen "
                    "FROM custody.trades WHERE instrument = :c"
                ),
                {"c": code},
            )
        ).all()
        product = (
            await session.execute(
                text("SELECT state, holder_count FROM custody.products WHERE code = :c"),
                {"c": code},
            )
        ).one()
    return {
        "accounts": sorted((member_index[r[0]], *r[1:]) for r in accounts),
        "reservations": sorted((order_index[r[0]], *r[1:]) for r in reservations),
        "trades": sorted(
            (
                int(r.trade_id.rsplit("-", 1)[1]),
                r.price_fen,
                r.quantity,
                member_index[r.buyer_member_id],
                member_index[r.seller_member_id],
                order_index[r.buyer_order_id],
                order_index[r.seller_order_id],
                r.buyer_fee_fen,
                r.seller_fee_fen,
            )
            for r in trades
        ),
        "product": tuple(product),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_batch_of_book_messages_equals_applying_them_one_by_one(
    factory: Factory, settings: CustodySettings, seed: int
) -> None:
    flow = order_flow(seed)
    trade_date = past_date()
    one = await build_world(factory, settings, flow, trade_date)
    batched = await build_world(factory, settings, flow, trade_date)

    code, _, _, messages = one
    for events in messages:
        async with unit_of_work(factory) as session:
            await book_events.apply_book_messages(session, [(code, events)])
    code, _, _, messages = batched
    async with unit_of_work(factory) as session:
        await book_events.apply_book_messages(session, [(code, events) for events in messages])

    expected = await world_state(factory, *one[:3])
    got = await world_state(factory, *batched[:3])
    assert got == expected
    # The flow exercised what it is meant to: trades, releases of each kind, amends.
    assert len(expected["trades"]) > 10
    reasons = {r[5] for r in expected["reservations"]}
    assert {"FILLED", "USER", "IOC_REMAINDER", "EXPIRED"} <= reasons, reasons
    assert any(r[4] == "open" for r in expected["reservations"])
