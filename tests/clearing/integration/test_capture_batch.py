"""Batched trade capture equals capture one message at a time: the same trades, the same
fees under the per-order cap, the same rolls; a trade or message seen before changes nothing.
Against the real (migrated) database; each path runs in a transaction that is rolled back."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.clearing.capture import apply_book_events, capture_batch
from shared.contracts import BOOK_EVENTS
from shared.db import make_session_factory
from shared.ids import new_id, uuid7
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import Inbox

DAY = date(2001, 3, 5)


def day_of_events(seed: int) -> list[Envelope]:
    """Book outputs of three books: trades whose orders fill many times (fee caps on both
    sides), one trade repeated in a later message, and each book's DayRolled."""
    rng = random.Random(seed)
    envelopes: list[Envelope] = []
    orders = [(new_id("o"), f"m{k % 7}") for k in range(12)]
    repeated: dict[str, Any] | None = None
    for code in ("CAPA", "CAPB", "CAPC"):
        seq = 0
        for n in range(1, 40):
            events: list[dict[str, Any]] = []
            for _ in range(rng.randint(1, 4)):
                seq += 1
                (maker, maker_m), (taker, taker_m) = rng.sample(orders, 2)
                events.append(
                    {
                        "type": "Trade",
                        "seq": seq,
                        "trade_id": new_id("t"),
                        "business_date": DAY.isoformat(),
                        "price_fen": rng.choice((100, 10_000, 2_500_000)),
                        "quantity": rng.randint(1, 3),
                        "maker_order_id": maker,
                        "maker_member_id": maker_m,
                        "taker_order_id": taker,
                        "taker_member_id": taker_m,
                        "taker_side": rng.choice(("BUY", "SELL")),
                    }
                )
            if repeated is None:
                repeated = events[0]
            elif n == 20:
                events.append(repeated)
            envelopes.append(book_envelope(code, n, events))
        rolled = {
            "type": "DayRolled",
            "seq": seq + 1,
            "previous_date": DAY.isoformat(),
            "business_date": (DAY + timedelta(days=1)).isoformat(),
        }
        envelopes.append(book_envelope(code, 40, [rolled]))
    rng.shuffle(envelopes)  # books interleave; each book's own order is kept below
    envelopes.sort(key=lambda e: (e.sequence,))
    return envelopes


def book_envelope(code: str, sequence: int, events: list[dict[str, Any]]) -> Envelope:
    payload = {"instrument": code, "executed_at": "2001-03-05T10:00:00+00:00", "events": events}
    return Envelope(str(uuid7()), BOOK_EVENTS, "matching", f"book:{code}", sequence, payload)


async def state(session: AsyncSession) -> dict[str, Any]:
    trades = (
        await session.execute(
            text(
                "SELECT trade_id, instrument, business_date, book_seq, stream_seq, amount_fen, "
                "buyer_member_id, seller_member_id, buy_order_id, sell_order_id, taker_side, "
                "buyer_fee_fen, seller_fee_fen FROM clearing.trades WHERE business_date = :d "
                "ORDER BY trade_id"
            ),
            {"d": DAY},
        )
    ).all()
    fees = (
        await session.execute(
            text(
                "SELECT order_id, member_id, side, fees_fen, fills FROM clearing.order_fees "
                "WHERE order_id IN (SELECT buy_order_id FROM clearing.trades WHERE business_date"
                " = :d UNION SELECT sell_order_id FROM clearing.trades WHERE business_date = :d)"
                " ORDER BY order_id"
            ),
            {"d": DAY},
        )
    ).all()
    rolls = (
        await session.execute(
            text(
                "SELECT instrument, business_date, book_seq, stream_seq FROM clearing.day_rolls "
                "WHERE previous_date = :d ORDER BY instrument"
            ),
            {"d": DAY},
        )
    ).all()
    return {"trades": trades, "fees": fees, "rolls": rolls}


async def test_batched_capture_equals_one_by_one(engine: AsyncEngine) -> None:
    envelopes = day_of_events(7)
    factory = make_session_factory(engine)
    async with factory() as session:
        await session.begin()
        inbox = Inbox("clearing", f"capture-test-{uuid7()}")
        for envelope in envelopes:
            if await inbox.record(session, envelope):
                await apply_book_events(session, envelope)
        one_by_one = await state(session)
        await session.rollback()
    async with factory() as session:
        await session.begin()
        inbox = Inbox("clearing", f"capture-test-{uuid7()}")
        rng = random.Random(3)
        start = 0
        captured = 0
        while start < len(envelopes):
            size = rng.randint(1, 50)
            chunk = envelopes[start : start + size]
            # A redelivery of the previous chunk's last message rides along.
            again = envelopes[start - 1 : start] if start else []
            delivered = again + chunk
            fresh = await inbox.record_many(session, delivered)
            captured += await capture_batch(
                session, [e for e, is_fresh in zip(delivered, fresh, strict=True) if is_fresh]
            )
            start += size
        batched = await state(session)
        positions = {
            r[0]: r[1]
            for r in await session.execute(
                text(
                    "SELECT stream, contiguous_upto FROM clearing.inbox_stream WHERE consumer = :c"
                ),
                {"c": inbox.consumer},
            )
        }
        await session.rollback()
    assert batched == one_by_one
    assert captured == len(one_by_one["trades"])
    assert len(one_by_one["rolls"]) == 3
    assert positions == {"book:CAPA": 40, "book:CAPB": 40, "book:CAPC": 40}
    # The cap held on both sides: no order paid more than 5.00, and some orders hit it.
    assert max(f.fees_fen for f in batched["fees"]) == 500
