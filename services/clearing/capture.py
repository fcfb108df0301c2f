"""Trade capture: every book's events, applied exactly once and in sequence by the inbox.

A ``Trade`` is stored with each side's fee (``shared.fees``), computed against the fees its
order already paid so that an order's fees never pass the per-order cap, on either side.
A ``DayRolled`` is recorded with its envelope sequence: once the inbox's contiguous
position of the book's stream reaches it, every trade of the closed day is captured.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts import BOOK_EVENTS, system_queues
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import Handler
from shared.runtime import ConsumerSpec

#: The consumer's name; its inbox is ``clearing.book`` (the runtime prefixes the service).
CONSUMER = "book"
INBOX_CONSUMER = f"clearing.{CONSUMER}"

_INSERT_TRADE = text(
    """
    INSERT INTO clearing.trades (trade_id, instrument, business_date, book_seq, stream_seq,
        price_fen, quantity, amount_fen, buyer_member_id, seller_member_id, buy_order_id,
        sell_order_id, taker_side, buyer_fee_fen, seller_fee_fen, executed_at)
    VALUES (:trade_id, :instrument, :business_date, :book_seq, :stream_seq, :price_fen,
        :quantity, :amount_fen, :buyer, :seller, :buy_order, :sell_order, :taker_side,
        :buyer_fee, :seller_fee, :executed_at)
    ON CONFLICT (trade_id) DO NOTHING
    RETURNING 1
    """
)
_ORDER_FEES = text("SELECT fees_fen FROM clearing.order_fees WHERE order_id = :o FOR UPDATE")
_ADD_ORDER_FEE = text(
    """
    INSERT INTO clearing.order_fees (order_id, member_id, side, fees_fen, fills)
    VALUES (:o, :m, :s, :f, 1)
    ON CONFLICT (order_id) DO UPDATE
        SET fees_fen = clearing.order_fees.fees_fen + EXCLUDED.fees_fen,
            fills = clearing.order_fees.fills + 1
    """
)
_RECORD_ROLL = text(
    """
    INSERT INTO clearing.day_rolls (instrument, previous_date, business_date, book_seq, stream_seq)
    VALUES (:i, :p, :d, :seq, :stream_seq)
    ON CONFLICT (instrument, previous_date) DO NOTHING
    """
)


def sides(event: dict[str, Any]) -> tuple[str, str, str, str]:
    """(buy order, buyer member, sell order, seller member) of a Trade event."""
    maker = (event["maker_order_id"], event["maker_member_id"])
    taker = (event["taker_order_id"], event["taker_member_id"])
    buy, sell = (taker, maker) if event["taker_side"] == "BUY" else (maker, taker)
    return buy[0], buy[1], sell[0], sell[1]


async def _charged(session: AsyncSession, order_id: str) -> int:
    value = (await session.execute(_ORDER_FEES, {"o": order_id})).scalar_one_or_none()
    return int(value or 0)


async def capture_trade(
    session: AsyncSession,
    instrument: str,
    event: dict[str, Any],
    executed_at: datetime,
    stream_seq: int,
    schedule: FeeSchedule,
) -> bool:
    """Store one trade with its fees; False if it was captured before."""
    buy_order, buyer, sell_order, seller = sides(event)
    amount = int(event["price_fen"]) * int(event["quantity"])
    buyer_fee = schedule.trade_fee_fen(amount, await _charged(session, buy_order))
    seller_fee = schedule.trade_fee_fen(amount, await _charged(session, sell_order))
    inserted = (
        await session.execute(
            _INSERT_TRADE,
            {
                "trade_id": event["trade_id"],
                "instrument": instrument,
                "business_date": date.fromisoformat(event["business_date"]),
                "book_seq": int(event["seq"]),
                "stream_seq": stream_seq,
                "price_fen": int(event["price_fen"]),
                "quantity": int(event["quantity"]),
                "amount_fen": amount,
                "buyer": buyer,
                "seller": seller,
                "buy_order": buy_order,
                "sell_order": sell_order,
                "taker_side": event["taker_side"],
                "buyer_fee": buyer_fee,
                "seller_fee": seller_fee,
                "executed_at": executed_at,
            },
        )
    ).first()
    if inserted is None:
        return False
    await session.execute(
        _ADD_ORDER_FEE,
        [
            {"o": buy_order, "m": buyer, "s": "BUY", "f": buyer_fee},
            {"o": sell_order, "m": seller, "s": "SELL", "f": seller_fee},
        ],
    )
    return True


async def apply_book_events(
    session: AsyncSession, envelope: Envelope, schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE
) -> None:
    payload = envelope.payload
    instrument = str(payload["instrument"])
    executed_at = datetime.fromisoformat(str(payload["executed_at"]))
    for event in payload["events"]:
        kind = event.get("type")
        if kind == "Trade":
            await capture_trade(
                session, instrument, event, executed_at, envelope.sequence, schedule
            )
        elif kind == "DayRolled":
            await session.execute(
                _RECORD_ROLL,
                {
                    "i": instrument,
                    "p": date.fromisoformat(event["previous_date"]),
                    "d": date.fromisoformat(event["business_date"]),
                    "seq": int(event["seq"]),
                    "stream_seq": envelope.sequence,
                },
            )


def book_handler(schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type != BOOK_EVENTS:
            return
        await apply_book_events(session, envelope, schedule)

    return handle


def consumer_specs(matching_shards: int) -> list[ConsumerSpec]:
    queues = {q.name: q for q in system_queues(matching_shards)}
    return [ConsumerSpec(CONSUMER, queues["clearing.book"], book_handler())]
