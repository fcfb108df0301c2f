"""Trade capture: every book's events, applied exactly once and in sequence by the inbox.

A ``Trade`` is stored with each side's fee (``shared.fees``), computed against the fees its
order already paid so that an order's fees never pass the per-order cap, on either side.
A ``DayRolled`` is recorded with its envelope sequence: once the inbox's contiguous
position of the book's stream reaches it, every trade of the closed day is captured.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts import BOOK_EVENTS, system_queues
from shared.driver import Tx, orm_session
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import BatchHandler, Handler
from shared.runtime import ConsumerSpec
from shared.sql import Statement

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


_CAPTURED = Statement(
    "SELECT trade_id FROM clearing.trades WHERE trade_id = ANY(CAST(:ids AS text[]))"
)
_ORDER_FEES_MANY = Statement(
    "SELECT order_id, fees_fen FROM clearing.order_fees "
    "WHERE order_id = ANY(CAST(:ids AS text[])) ORDER BY order_id FOR UPDATE"
)
_INSERT_TRADES = Statement(
    """
    INSERT INTO clearing.trades (trade_id, instrument, business_date, book_seq, stream_seq,
        price_fen, quantity, amount_fen, buyer_member_id, seller_member_id, buy_order_id,
        sell_order_id, taker_side, buyer_fee_fen, seller_fee_fen, executed_at)
    SELECT t, i, d, bs, ss, p, q, p * q, bm, sm, bo, so, ts, bf, sf, x
    FROM unnest(CAST(:t AS text[]), CAST(:i AS text[]), CAST(:d AS date[]),
        CAST(:bs AS bigint[]), CAST(:ss AS bigint[]), CAST(:p AS bigint[]),
        CAST(:q AS bigint[]), CAST(:bm AS text[]), CAST(:sm AS text[]), CAST(:bo AS text[]),
        CAST(:so AS text[]), CAST(:ts AS text[]), CAST(:bf AS bigint[]), CAST(:sf AS bigint[]),
        CAST(:x AS timestamptz[])) AS r (t, i, d, bs, ss, p, q, bm, sm, bo, so, ts, bf, sf, x)
    ON CONFLICT (trade_id) DO NOTHING
    RETURNING trade_id
    """
)
_ADD_ORDER_FEES = Statement(
    """
    INSERT INTO clearing.order_fees (order_id, member_id, side, fees_fen, fills)
    SELECT o, m, s, f, n FROM unnest(CAST(:o AS text[]), CAST(:m AS text[]),
        CAST(:s AS text[]), CAST(:f AS bigint[]), CAST(:n AS integer[])) AS r (o, m, s, f, n)
    ORDER BY o
    ON CONFLICT (order_id) DO UPDATE
        SET fees_fen = clearing.order_fees.fees_fen + EXCLUDED.fees_fen,
            fills = clearing.order_fees.fills + EXCLUDED.fills
    """
)
_RECORD_ROLLS = Statement(
    """
    INSERT INTO clearing.day_rolls (instrument, previous_date, business_date, book_seq, stream_seq)
    SELECT i, p, d, q, s FROM unnest(CAST(:i AS text[]), CAST(:p AS date[]),
        CAST(:d AS date[]), CAST(:q AS bigint[]), CAST(:s AS bigint[])) AS r (i, p, d, q, s)
    ON CONFLICT (instrument, previous_date) DO NOTHING
    """
)

#: Column names of one batch of trades, in ``_INSERT_TRADES``'s parameters.
_TRADE_PARAMS = ("t", "i", "d", "bs", "ss", "p", "q", "bm", "sm", "bo", "so", "ts", "bf", "sf", "x")


async def capture_batch(
    session: AsyncSession,
    envelopes: Sequence[Envelope],
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> int:
    """Apply many ``book.events`` envelopes (new to the inbox, in delivery order) with a
    fixed number of statements: the same trades, fees and rolls as applying them one by one
    with :func:`apply_book_events`. Returns the number of trades captured."""
    trades: list[tuple[str, dict[str, Any], datetime, int]] = []
    rolls: list[tuple[str, dict[str, Any], int]] = []
    for envelope in envelopes:
        if envelope.type != BOOK_EVENTS:
            continue
        payload = envelope.payload
        instrument = str(payload["instrument"])
        executed_at = datetime.fromisoformat(str(payload["executed_at"]))
        for event in payload["events"]:
            kind = event.get("type")
            if kind == "Trade":
                trades.append((instrument, event, executed_at, envelope.sequence))
            elif kind == "DayRolled":
                rolls.append((instrument, event, envelope.sequence))
    captured = 0
    if trades:
        captured = await _capture_trades(session, trades, schedule)
    if rolls:
        await _RECORD_ROLLS.execute(
            session,
            i=[r[0] for r in rolls],
            p=[date.fromisoformat(r[1]["previous_date"]) for r in rolls],
            d=[date.fromisoformat(r[1]["business_date"]) for r in rolls],
            q=[int(r[1]["seq"]) for r in rolls],
            s=[r[2] for r in rolls],
        )
    return captured


async def _capture_trades(
    session: AsyncSession,
    trades: list[tuple[str, dict[str, Any], datetime, int]],
    schedule: FeeSchedule,
) -> int:
    ids = [str(t[1]["trade_id"]) for t in trades]
    seen = {r[0] for r in await _CAPTURED.fetch(session, ids=ids)}
    orders = sorted({o for t in trades for o in sides(t[1])[0::2]})
    charged: dict[str, int] = {
        str(o): int(f) for o, f in await _ORDER_FEES_MANY.fetch(session, ids=orders)
    }
    columns: dict[str, list[Any]] = {name: [] for name in _TRADE_PARAMS}
    # Per order: (member, side, fees added, fills added).
    added: dict[str, list[Any]] = {}
    for instrument, event, executed_at, stream_seq in trades:
        trade_id = str(event["trade_id"])
        if trade_id in seen:
            continue  # captured before (or listed twice): changes nothing
        seen.add(trade_id)
        buy_order, buyer, sell_order, seller = sides(event)
        price, quantity = int(event["price_fen"]), int(event["quantity"])
        amount = price * quantity
        buyer_fee = schedule.trade_fee_fen(amount, charged.get(buy_order, 0))
        seller_fee = schedule.trade_fee_fen(amount, charged.get(sell_order, 0))
        for order, member, side, fee in (
            (buy_order, buyer, "BUY", buyer_fee),
            (sell_order, seller, "SELL", seller_fee),
        ):
            charged[order] = charged.get(order, 0) + fee
            row = added.setdefault(order, [member, side, 0, 0])
            row[2] += fee
            row[3] += 1
        for name, value in zip(
            _TRADE_PARAMS,
            (
                trade_id,
                instrument,
                date.fromisoformat(event["business_date"]),
                int(event["seq"]),
                stream_seq,
                price,
                quantity,
                buyer,
                seller,
                buy_order,
                sell_order,
                event["taker_side"],
                buyer_fee,
                seller_fee,
                executed_at,
            ),
            strict=True,
        ):
            columns[name].append(value)
    if not columns["t"]:
        return 0
    inserted = len(await _INSERT_TRADES.fetch(session, **columns))
    if inserted != len(columns["t"]):
        # A concurrent consumer stored some of these trades between the check and the
        # insert: roll back, the batch is retried message by message.
        raise RuntimeError("trades captured concurrently; retrying")
    order_ids = sorted(added)
    await _ADD_ORDER_FEES.execute(
        session,
        o=order_ids,
        m=[added[o][0] for o in order_ids],
        s=[added[o][1] for o in order_ids],
        f=[added[o][2] for o in order_ids],
        n=[added[o][3] for o in order_ids],
    )
    return inserted


def book_handler(schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE) -> Handler:
    async def handle(tx: Tx, envelope: Envelope) -> None:
        if envelope.type != BOOK_EVENTS:
            return
        await apply_book_events(orm_session(tx), envelope, schedule)

    return handle


def batch_handler(schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE) -> BatchHandler:
    async def handle(tx: Tx, envelopes: Sequence[Envelope]) -> None:
        await capture_batch(orm_session(tx), envelopes, schedule)

    return handle


#: Deliveries applied per transaction (the broker's prefetch bounds what is buffered).
CAPTURE_BATCH = 2_000


def consumer_specs(
    matching_shards: int, *, batched: bool = True, linger_seconds: float = 0.0
) -> list[ConsumerSpec]:
    queues = {q.name: q for q in system_queues(matching_shards)}
    return [
        ConsumerSpec(
            CONSUMER,
            queues["clearing.book"],
            book_handler(),
            max_batch=CAPTURE_BATCH if batched else 200,
            batch_handler=batch_handler() if batched else None,
            linger_seconds=linger_seconds,
        )
    ]
