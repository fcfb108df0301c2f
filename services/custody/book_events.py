"""The books' events applied to reservations and obligations, a batch at a time.

A batch of ``book.events`` messages (fills, trades, cancels, expiries, rejections, amends
and state changes of many orders) is applied in the inbox's transaction with a fixed
number of statements, whatever its size: the reservations it names are read (and locked)
once, the events are applied in order to those records in memory, and the changes are
written back in one statement per table. The result is the one applying the events one by
one gives (``tests/custody/test_custody_book_batch.py``): a later event of the batch sees
what an earlier one did to the same order, and a trade already captured, in the database
or earlier in the batch, is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from services.custody import ledger, messages, registry
from services.custody.domain.products import STATES
from services.custody.domain.reservations import Side, apply_fill, required_hold
from services.custody.domain.settlement import AccountKey, Delta
from shared.clock import utc_now
from shared.driver import Tx
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule
from shared.sql import Statement

#: One message's events: (instrument, events in the book's order).
BookMessage = tuple[str, Sequence[dict[str, Any]]]


class BookDivergence(RuntimeError):
    """A book event custody cannot apply (an order or trade it never saw): the message is
    retried and then dead-lettered for staff rather than guessed at."""


@dataclass(slots=True)
class _Reservation:
    order_id: str
    member_id: str
    instrument: str
    side: Side
    price_fen: int
    remaining: int
    fees_charged: int
    held: int
    account_id: int
    status: str
    close_reason: str | None
    changed: bool = False


@dataclass(slots=True)
class _Batch:
    """What a batch does, gathered before anything is written."""

    reservations: dict[str, _Reservation]
    known_trades: set[str]
    settled_dates: set[date]
    deltas: dict[int | AccountKey, Delta] = field(default_factory=dict)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    traded: set[str] = field(default_factory=set)
    rejected: list[tuple[str, str, str, str]] = field(default_factory=list)
    changed_products: list[str] = field(default_factory=list)

    def add(self, account: int | AccountKey, **changes: int) -> None:
        d = self.deltas.get(account)
        if d is None:
            d = self.deltas[account] = Delta()
        for name, value in changes.items():
            setattr(d, name, getattr(d, name) + value)


_RESERVATIONS = Statement(
    """
    SELECT order_id, member_id, instrument, side, price_fen, remaining, fees_charged, held,
           account_id, status, close_reason
    FROM custody.reservations WHERE order_id = ANY(CAST(:ids AS text[]))
    ORDER BY order_id FOR UPDATE
    """
)


async def apply_book_messages(
    session: Tx,
    batch: Sequence[BookMessage],
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> None:
    """Apply the events of several book messages, in order, in the caller's transaction."""
    order_ids: set[str] = set()
    trade_ids: set[str] = set()
    dates: set[date] = set()
    for _, events in batch:
        for event in events:
            for key in ("order_id", "maker_order_id", "taker_order_id"):
                value = event.get(key)
                if isinstance(value, str):
                    order_ids.add(value)
            if event.get("type") == "Trade":
                trade_ids.add(event["trade_id"])
                dates.add(date.fromisoformat(event["business_date"]))
    reservations = await _load_reservations(session, order_ids)
    known_trades, settled_dates = await _known_trades_and_settled_dates(session, trade_ids, dates)
    state = _Batch(
        reservations=reservations, known_trades=known_trades, settled_dates=settled_dates
    )
    for instrument, events in batch:
        for event in events:
            await _apply(session, state, instrument, event, schedule)
    await _write(session, state)


async def _load_reservations(session: Tx, ids: set[str]) -> dict[str, _Reservation]:
    if not ids:
        return {}
    rows = await _RESERVATIONS.fetch(session, ids=sorted(ids))
    return {r["order_id"]: _Reservation(*r) for r in rows}


#: Of a batch's trades, those recorded before, and of their business dates, those already
#: settled: one round trip.
_KNOWN_TRADES_AND_SETTLED_DATES = Statement(
    "SELECT ARRAY(SELECT trade_id FROM custody.trades WHERE trade_id = ANY(CAST(:t AS text[]))), "
    "ARRAY(SELECT business_date FROM custody.settlement_batches "
    "WHERE business_date = ANY(CAST(:d AS date[])))"
)


async def _known_trades_and_settled_dates(
    session: Tx, trade_ids: set[str], dates: set[date]
) -> tuple[set[str], set[date]]:
    if not trade_ids and not dates:
        return set(), set()
    known, settled = (
        await _KNOWN_TRADES_AND_SETTLED_DATES.fetch(session, t=sorted(trade_ids), d=sorted(dates))
    )[0]
    return set(known), set(settled)


async def _apply(
    session: Tx,
    state: _Batch,
    instrument: str,
    event: dict[str, Any],
    schedule: FeeSchedule,
) -> None:
    kind = event.get("type")
    if kind == "Trade":
        _trade(state, instrument, event, schedule)
    elif kind == "OrderFilled":
        if (
            event.get("status", "").upper() == "FILLED"
            or int(event.get("remaining_quantity", 1)) == 0
        ):
            _release(state, event["order_id"], "FILLED")
    elif kind == "OrderCancelled":
        _release(state, event["order_id"], str(event.get("reason", "CANCELLED")))
    elif kind == "OrderExpired":
        _release(state, event["order_id"], "EXPIRED")
    elif kind == "OrderRejected":
        reason = str(event.get("reason"))
        res = _release(state, event["order_id"], reason)
        if res is not None:
            state.rejected.append((res.order_id, res.member_id, instrument, reason))
    elif kind == "OrderAmended":
        _amended(state, event, schedule)
    elif kind == "BookStateChanged":
        book_state = str(event["state"]).lower()
        if book_state in STATES and await registry.set_state(session, instrument, book_state):
            state.changed_products.append(instrument)


def _trade(state: _Batch, code: str, event: dict[str, Any], schedule: FeeSchedule) -> None:
    """Turn one trade into obligations (a trade seen before changes nothing)."""
    trade_id = event["trade_id"]
    if trade_id in state.known_trades:
        return
    if event["taker_side"] == "BUY":
        buy_id, sell_id = event["taker_order_id"], event["maker_order_id"]
    else:
        buy_id, sell_id = event["maker_order_id"], event["taker_order_id"]
    buy = state.reservations.get(buy_id)
    sell = state.reservations.get(sell_id)
    if buy is None or sell is None or buy.side != "BUY" or sell.side != "SELL":
        raise BookDivergence(f"trade {trade_id}: orders unknown to custody")
    price, quantity = int(event["price_fen"]), int(event["quantity"])
    amount = price * quantity
    b = apply_fill(
        "BUY", buy.price_fen, buy.remaining, buy.fees_charged, buy.held, price, quantity, schedule
    )
    s = apply_fill(
        "SELL",
        sell.price_fen,
        sell.remaining,
        sell.fees_charged,
        sell.held,
        price,
        quantity,
        schedule,
    )
    business_date = date.fromisoformat(event["business_date"])
    if business_date in state.settled_dates:
        raise BookDivergence(f"trade {trade_id} is dated {business_date}, already settled")
    state.add(buy.account_id, held=-(b.committed + b.released), pending_out=b.committed)
    state.add(sell.account_id, held=-(s.committed + s.released), pending_out=s.committed)
    state.add(("member", sell.member_id, "CNY"), pending_in=amount - s.fee_fen)
    state.add(("member", buy.member_id, code), pending_in=quantity)
    if b.fee_fen + s.fee_fen:
        state.add(ledger.FEE_ACCOUNT_KEY, pending_in=b.fee_fen + s.fee_fen)
    buy.remaining, buy.fees_charged, buy.held = b.new_remaining, b.new_fees_charged_fen, b.new_held
    sell.remaining, sell.fees_charged = s.new_remaining, s.new_fees_charged_fen
    sell.held = s.new_held
    buy.changed = sell.changed = True
    state.known_trades.add(trade_id)
    state.traded.add(code)
    state.trades.append(
        (
            trade_id,
            code,
            business_date,
            price,
            quantity,
            buy.member_id,
            sell.member_id,
            buy_id,
            sell_id,
            b.fee_fen,
            s.fee_fen,
        )
    )


def _release(state: _Batch, order_id: str, reason: str) -> _Reservation | None:
    """Close an open reservation and release what it holds; returns it if it was open."""
    res = state.reservations.get(order_id)
    if res is None or res.status != "open":
        return None
    if res.held:
        state.add(res.account_id, held=-res.held)
    res.held = 0
    res.status = "closed"
    res.close_reason = reason
    res.changed = True
    return res


def _amended(state: _Batch, event: dict[str, Any], schedule: FeeSchedule) -> None:
    res = state.reservations.get(event["order_id"])
    if res is None or res.status != "open":
        return
    remaining = int(event["remaining_quantity"])
    new_held = required_hold(res.side, res.price_fen, remaining, res.fees_charged, schedule)
    release = res.held - new_held
    if release < 0:
        raise BookDivergence(f"amend of {res.order_id} would need more than is reserved")
    if release:
        state.add(res.account_id, held=-release)
    res.remaining, res.held = remaining, new_held
    res.changed = True


_WRITE_RESERVATIONS = Statement(
    """
    UPDATE custody.reservations r SET remaining = v.remaining,
        fees_charged = v.fees, held = v.held, status = v.status,
        close_reason = v.close_reason
    FROM unnest(CAST(:ids AS text[]), CAST(:remaining AS bigint[]),
                CAST(:fees AS bigint[]), CAST(:held AS bigint[]),
                CAST(:status AS text[]), CAST(:reasons AS text[]))
         AS v(order_id, remaining, fees, held, status, close_reason)
    WHERE r.order_id = v.order_id
    """
)
_INSERT_TRADES = Statement(
    """
    INSERT INTO custody.trades (trade_id, instrument, business_date, price_fen,
        quantity, buyer_member_id, seller_member_id, buyer_order_id,
        seller_order_id, buyer_fee_fen, seller_fee_fen, created_at)
    SELECT v.*, CAST(:now AS timestamptz)
    FROM unnest(CAST(:t AS text[]), CAST(:c AS text[]), CAST(:d AS date[]),
                CAST(:p AS bigint[]), CAST(:q AS bigint[]), CAST(:bm AS text[]),
                CAST(:sm AS text[]), CAST(:bo AS text[]), CAST(:so AS text[]),
                CAST(:bf AS bigint[]), CAST(:sf AS bigint[])) AS v
    """
)


async def _write(session: Tx, state: _Batch) -> None:
    """One statement per kind of change, accounts in ascending id order."""
    keys = [k for k in state.deltas if isinstance(k, tuple)]
    ids = await ledger.ensure_accounts(session, keys) if keys else {}
    deltas: dict[int, Delta] = {}
    for account, d in state.deltas.items():
        target = ids[account] if isinstance(account, tuple) else account
        total = deltas.get(target)
        if total is None:
            deltas[target] = d
        else:
            total.settled += d.settled
            total.held += d.held
            total.pending_in += d.pending_in
            total.pending_out += d.pending_out
    await ledger.apply_deltas(session, deltas)
    changed = sorted(
        (r for r in state.reservations.values() if r.changed), key=lambda r: r.order_id
    )
    if changed:
        await _WRITE_RESERVATIONS.execute(
            session,
            ids=[r.order_id for r in changed],
            remaining=[r.remaining for r in changed],
            fees=[r.fees_charged for r in changed],
            held=[r.held for r in changed],
            status=[r.status for r in changed],
            reasons=[r.close_reason for r in changed],
        )
    if state.trades:
        columns = list(zip(*state.trades, strict=True))
        await _INSERT_TRADES.execute(
            session,
            t=list(columns[0]),
            c=list(columns[1]),
            d=list(columns[2]),
            p=list(columns[3]),
            q=list(columns[4]),
            bm=list(columns[5]),
            sm=list(columns[6]),
            bo=list(columns[7]),
            so=list(columns[8]),
            bf=list(columns[9]),
            sf=list(columns[10]),
            now=utc_now(),
        )
    # Product rows before outbox streams: the order in which the command consumer takes them.
    changed_products = state.changed_products + await ledger.refresh_holder_counts(
        session, state.traded
    )
    for order_id, member_id, instrument, reason in state.rejected:
        await messages.order_rejected(session, order_id, member_id, instrument, reason)
    if changed_products:
        await messages.instrument_updated(session, changed_products)


# --- lock order: a batch locks every account it may move first, in id order (orders.py) ---

_LOCK_BOOK_ACCOUNTS = Statement(
    """
    SELECT a.id FROM custody.accounts a
    WHERE (a.owner_kind = 'member'
           AND a.owner_id IN (SELECT r.member_id FROM custody.reservations r
                              WHERE r.order_id = ANY(CAST(:orders AS text[])))
           AND (a.asset = 'CNY' OR a.asset = ANY(CAST(:instruments AS text[]))))
       OR (CAST(:trades AS boolean) AND a.owner_kind = 'fee')
    ORDER BY a.id
    FOR UPDATE OF a
    """
)


async def lock_accounts_of_book_events(session: Tx, payloads: list[dict[str, Any]]) -> None:
    """Lock every account a batch of book events may move (the cash and units accounts
    of the members whose orders they name, and the fee account if any trade), in id order."""
    order_ids: set[str] = set()
    instruments: set[str] = set()
    trades = False
    for payload in payloads:
        instruments.add(str(payload.get("instrument")))
        for event in payload.get("events", []):
            if not isinstance(event, dict):
                continue
            trades = trades or event.get("type") == "Trade"
            for key in ("order_id", "maker_order_id", "taker_order_id"):
                if isinstance(event.get(key), str):
                    order_ids.add(event[key])
    if order_ids:
        await _LOCK_BOOK_ACCOUNTS.execute(
            session, orders=sorted(order_ids), instruments=sorted(instruments), trades=trades
        )
