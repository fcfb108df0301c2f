"""The view updater: consumes ``gateway.events`` and keeps the order and trade views,
the reference-data cache and the business date current; queues webhooks in the same
transaction and pushes WebSocket messages once it has committed.

Book events arrive in book sequence on a single-active-consumer queue, and the inbox
applies each message once, so the view follows the book exactly. Final states
(filled, cancelled, expired, rejected) are never left once reached.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from types import SimpleNamespace
from typing import Any

import orjson

from services.gateway import repositories as repo
from services.gateway import webhooks as hooks
from services.gateway.models import orders, sql_type, trades
from services.gateway.orders import order_resource
from services.gateway.ws import PendingPushes
from shared.clock import rfc3339
from shared.contracts import (
    BOOK_EVENTS,
    BUSINESS_DATE_ROLLED,
    INSTRUMENT_UPDATED,
    ORDER_REJECTED,
    SETTLEMENT_COMPLETED,
    WITHDRAWAL_UPDATED,
)
from shared.driver import Tx, after_commit, orm_session
from shared.fees import trade_fee_fen
from shared.messaging.envelope import Envelope
from shared.money import format_fen
from shared.sql import Statement

log = logging.getLogger(__name__)

CANCEL_REASONS = {"USER", "IOC_REMAINDER", "FOK_UNFILLED", "SELF_TRADE_PREVENTED", "DELISTED"}
BOOK_STATES = {"trading", "halted", "delisted"}
_PUSHES = "gateway.pushes"
_BATCH = "gateway.view_batch"
_WRITTEN = (
    "order_id",
    "quantity",
    "filled_quantity",
    "filled_amount_fen",
    "fees_fen",
    "status",
    "reject_reason",
    "cancel_reason",
    "updated_at",
)
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
NOTIFY_LIMIT = 7900

_TRADE_COLUMNS = tuple(c.name for c in trades.columns if c.name != "id")
#: A batch's whole write in one statement (one round of the driver and the server): its
#: new trades in the order given (their ids are the trade feed's order), its changed
#: orders, and its pushes, which PostgreSQL sends to every gateway instance on commit.
#: Any part may be empty.
_WRITE_BATCH = Statement(
    "WITH new_trades AS ("
    "INSERT INTO gateway.trades ({trade_names}) SELECT {trade_names} FROM unnest({trade_arrays}) "
    "WITH ORDINALITY AS t({trade_names}, n) ORDER BY t.n "
    "ON CONFLICT (trade_id, order_id) DO NOTHING), "
    "written AS (UPDATE gateway.orders o SET {sets} FROM unnest({order_arrays}) "
    "AS v({order_names}) WHERE o.order_id = v.order_id) "
    "SELECT pg_notify(CAST(:channel AS text), p) FROM unnest(CAST(:payloads AS text[])) AS p".format(
        trade_names=", ".join(_TRADE_COLUMNS),
        trade_arrays=", ".join(
            f"CAST(:trade_{n} AS {sql_type(trades, n)}[])" for n in _TRADE_COLUMNS
        ),
        sets=", ".join(f"{n} = v.{n}" for n in _WRITTEN if n != "order_id"),
        order_arrays=", ".join(f"CAST(:order_{n} AS {sql_type(orders, n)}[])" for n in _WRITTEN),
        order_names=", ".join(_WRITTEN),
    )
)
_TRADE_KEYS = Statement(
    "SELECT trade_id, order_id FROM gateway.trades WHERE trade_id = ANY(CAST(:ids AS text[]))"
)


def _columns(
    rows: Sequence[dict[str, Any]], names: Iterable[str], prefix: str = ""
) -> dict[str, list[Any]]:
    return {prefix + name: [row[name] for row in rows] for name in names}


def _side(value: object) -> str:
    return "buy" if str(value).upper() == "BUY" else "sell"


class _Batch:
    """What one transaction of the view updater (a batch of messages) has loaded and will
    write back: the order rows (shared by the batch's messages, so each sees the last one's
    changes), the trades known or added, and the callbacks to queue."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.absent: set[str] = set()
        self.dirty: set[str] = set()
        self.trade_keys: set[tuple[str, str]] = set()
        self.checked_trades: set[str] = set()
        self.new_trades: list[dict[str, Any]] = []
        self.events: list[hooks.Event] = []


class _Orders:
    """The order rows one message touches (a view of its batch's rows) and which it changed."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.changed: set[str] = set()

    def get(self, order_id: object) -> dict[str, Any] | None:
        return self.rows.get(str(order_id))

    def touch(self, order: dict[str, Any]) -> None:
        self.changed.add(order["order_id"])

    def set_status(self, order: dict[str, Any], status: str) -> bool:
        if order["status"] in repo.FINAL_STATUSES or order["status"] == status:
            return False
        order["status"] = status
        self.touch(order)
        return True

    def fill_status(self, order: dict[str, Any]) -> None:
        filled = order["filled_quantity"]
        if filled >= order["quantity"]:
            self.set_status(order, "filled")
        elif filled > 0:
            self.set_status(order, "partially_filled")


def _order_ids(envelope: Envelope) -> set[str]:
    payload = envelope.payload
    ids: set[str] = set()
    if envelope.type == BOOK_EVENTS:
        for ev in payload.get("events", []):
            if isinstance(ev, dict):
                for key in ("order_id", "maker_order_id", "taker_order_id"):
                    if isinstance(ev.get(key), str):
                        ids.add(ev[key])
    elif envelope.type == ORDER_REJECTED and payload.get("order_id") is not None:
        ids.add(str(payload["order_id"]))
    return ids


def _trade_ids(envelope: Envelope) -> set[str]:
    if envelope.type != BOOK_EVENTS:
        return set()
    return {
        str(ev["trade_id"])
        for ev in envelope.payload.get("events", [])
        if isinstance(ev, dict) and ev.get("type") == "Trade" and "trade_id" in ev
    }


#: Book events whose handling writes through the ORM (rare: a lost cancel race, a book's
#: state, the day's roll); every other book event runs on the driver.
_SESSION_BOOK_EVENTS = frozenset({"CancelRejected", "BookStateChanged", "DayRolled"})


def needs_session(envelope: Envelope) -> bool:
    """Whether the view updater's handling of the message needs the ORM session: anything
    but book events and rejections, and book events of the rare kinds above."""
    if envelope.type == ORDER_REJECTED:
        return False
    if envelope.type != BOOK_EVENTS:
        return True
    return any(
        isinstance(ev, dict) and ev.get("type") in _SESSION_BOOK_EVENTS
        for ev in envelope.payload.get("events", ())
    )


class ViewUpdater:
    """Applies each message in memory over rows loaded once per batch (``begin``) and
    writes the batch's changes back in a few statements (``end``): the same effects, in
    the same transaction, as applying the messages one at a time."""

    def __init__(
        self,
        on_commit: Callable[[PendingPushes], None],
        on_instrument: Callable[[str], None] = lambda _: None,  # "" : the business date
        *,
        notify_channel: str | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._on_instrument = on_instrument
        self._notify_channel = notify_channel

    async def begin(self, session: Tx, envelopes: Sequence[Envelope]) -> None:
        """Load every order and trade the batch's messages name, in two statements."""
        batch = _Batch()
        session.info[_BATCH] = batch
        ids: set[str] = set()
        trade_ids: set[str] = set()
        for envelope in envelopes:
            ids |= _order_ids(envelope)
            trade_ids |= _trade_ids(envelope)
        await self._load_rows(session, batch, ids)
        await self._load_trades(session, batch, trade_ids)

    async def end(self, session: Tx) -> None:
        """Write back the batch's changed orders, new trades, callbacks and pushes."""
        batch = session.info.pop(_BATCH, None)
        if not isinstance(batch, _Batch):
            return
        pushes = self._pushes(session)
        if await hooks.enqueue(session, batch.events):
            pushes.webhooks = True
        payloads = self._payloads(pushes.drain()) if self._notify_channel is not None else []
        if not (batch.new_trades or batch.dirty or payloads):
            return
        changed = [batch.rows[oid] for oid in sorted(batch.dirty)]
        await _WRITE_BATCH.execute(
            session,
            channel=self._notify_channel,
            payloads=payloads,
            **_columns(batch.new_trades, _TRADE_COLUMNS, prefix="trade_"),
            **_columns(changed, _WRITTEN, prefix="order_"),
        )

    async def handle(self, session: Tx, envelope: Envelope) -> None:
        own = not isinstance(session.info.get(_BATCH), _Batch)
        if own:  # called outside a batch: a batch of one
            await self.begin(session, [envelope])
        pushes = self._pushes(session)
        payload = envelope.payload
        if envelope.type == BOOK_EVENTS:
            await self._book(session, envelope, pushes)
        elif envelope.type == ORDER_REJECTED:
            await self._rejected(session, envelope, pushes)
        elif envelope.type == INSTRUMENT_UPDATED:
            data = (
                payload.get("instrument")
                if isinstance(payload.get("instrument"), dict)
                else payload
            )
            if isinstance(data, dict) and isinstance(data.get("code"), str):
                await repo.upsert_instrument(orm_session(session), data)
                self._on_instrument(data["code"])
        elif envelope.type == BUSINESS_DATE_ROLLED:
            business_date = str(payload["business_date"])
            await repo.set_business_date(orm_session(session), business_date, only_forward=True)
            self._on_instrument("")
        elif envelope.type == WITHDRAWAL_UPDATED:
            await self._withdrawal(session, payload)
        elif envelope.type == SETTLEMENT_COMPLETED:
            await self._settlement(session, payload)
        else:
            log.debug("ignored message", extra={"type": envelope.type})
        if own:
            await self.end(session)

    @staticmethod
    def _payloads(messages: list[dict[str, Any]]) -> list[str]:
        """The pushes as NOTIFY payloads (PostgreSQL delivers them on commit)."""
        payloads = []
        for message in messages:
            payload = orjson.dumps(message).decode()
            if len(payload.encode()) < NOTIFY_LIMIT:
                payloads.append(payload)
            else:
                log.warning(
                    "websocket push too large for NOTIFY; dropped", extra={"kind": message["k"]}
                )
        return payloads

    def _pushes(self, session: Tx) -> PendingPushes:
        pushes = session.info.get(_PUSHES)
        if isinstance(pushes, PendingPushes):
            return pushes
        pushes = PendingPushes()
        session.info[_PUSHES] = pushes
        loop = asyncio.get_running_loop()
        on_commit = self._on_commit

        def committed() -> None:
            loop.call_soon(on_commit, pushes)

        after_commit(session, committed)
        return pushes

    @staticmethod
    def _batch(session: Tx) -> _Batch:
        batch = session.info.get(_BATCH)
        assert isinstance(batch, _Batch), "a message handled outside begin/end"
        return batch

    @staticmethod
    async def _load_rows(session: Tx, batch: _Batch, order_ids: set[str]) -> None:
        wanted = order_ids - batch.rows.keys() - batch.absent
        if not wanted:
            return
        for row in await repo.get_orders_by_ids(session, wanted):
            batch.rows[row["order_id"]] = row
        batch.absent |= wanted - batch.rows.keys()

    @staticmethod
    async def _load_trades(session: Tx, batch: _Batch, trade_ids: set[str]) -> None:
        wanted = trade_ids - batch.checked_trades
        if not wanted:
            return
        rows = await _TRADE_KEYS.fetch(session, ids=sorted(wanted))
        batch.trade_keys |= {(r["trade_id"], r["order_id"]) for r in rows}
        batch.checked_trades |= wanted

    async def _load(self, session: Tx, order_ids: set[str]) -> _Orders:
        batch = self._batch(session)
        await self._load_rows(session, batch, order_ids)
        return _Orders(batch.rows)

    async def _save(
        self,
        session: Tx,
        loaded: _Orders,
        envelope: Envelope,
        pushes: PendingPushes,
        events: list[hooks.Event],
    ) -> None:
        """Mark the orders this message changed for writing back, and note their pushes and
        callbacks (one ``order.updated`` per order and message, as before batching)."""
        batch = self._batch(session)
        for oid in sorted(loaded.changed):
            order = loaded.rows[oid]
            order["updated_at"] = envelope.occurred_at
            batch.dirty.add(oid)
            resource = order_resource(SimpleNamespace(**order))
            pushes.orders[oid] = (order["partner_id"], resource)
            events.append((order["partner_id"], "order.updated", resource))
        batch.events.extend(events)

    async def _withdrawal(self, session: Tx, payload: dict[str, Any]) -> None:
        data = {k: v for k, v in payload.items() if k != "partner_id"}
        partner_id = payload.get("partner_id") or await repo.partner_of_member(
            orm_session(session), str(payload["member_id"])
        )
        if partner_id is None:
            log.warning("withdrawal of an unknown member", extra={"member_id": data["member_id"]})
            return
        self._batch(session).events.append((str(partner_id), "withdrawal.updated", data))

    async def _settlement(self, session: Tx, payload: dict[str, Any]) -> None:
        """One ``settlement.completed`` per partner, with its own members' results only."""
        members = [m for m in payload.get("members", []) if isinstance(m, dict)]
        owners = await repo.partners_of_members(
            orm_session(session), {str(m["member_id"]) for m in members}
        )
        per_partner: dict[str, list[dict[str, Any]]] = {}
        for m in members:
            partner_id = owners.get(str(m["member_id"]))
            if partner_id is not None:
                per_partner.setdefault(partner_id, []).append(m)
        self._batch(session).events.extend(
            (
                partner_id,
                "settlement.completed",
                {
                    "business_date": payload["business_date"],
                    "status": "settled",
                    "members": sorted(own, key=lambda m: str(m["member_id"])),
                },
            )
            for partner_id, own in sorted(per_partner.items())
        )

    async def _rejected(self, session: Tx, envelope: Envelope, pushes: PendingPushes) -> None:
        order_id = str(envelope.payload.get("order_id"))
        loaded = await self._load(session, {order_id})
        order = loaded.get(order_id)
        if order is None:
            return
        if loaded.set_status(order, "rejected"):
            order["reject_reason"] = str(envelope.payload.get("reason") or "REJECTED")
        await self._save(session, loaded, envelope, pushes, [])

    async def _book(self, session: Tx, envelope: Envelope, pushes: PendingPushes) -> None:
        instrument = str(envelope.payload.get("instrument"))
        events = [e for e in envelope.payload.get("events", []) if isinstance(e, dict)]
        ids: set[str] = set()
        for ev in events:
            for key in ("order_id", "maker_order_id", "taker_order_id"):
                if isinstance(ev.get(key), str):
                    ids.add(ev[key])
        loaded = await self._load(session, ids)
        await self._load_trades(session, self._batch(session), _trade_ids(envelope))
        callbacks: list[hooks.Event] = []
        book_moved = False
        for ev in events:
            kind = ev.get("type")
            order = loaded.get(ev.get("order_id"))
            if kind in ("OrderAccepted", "OrderRested"):
                if order is not None and order["status"] == "pending_new":
                    loaded.set_status(order, "open")
                book_moved = book_moved or kind == "OrderRested"
            elif kind == "Trade":
                await self._trade(session, instrument, ev, envelope, loaded, pushes, callbacks)
                book_moved = True
            elif kind == "OrderFilled":
                if order is not None:
                    filled = int(ev["filled_quantity"])
                    if filled != order["filled_quantity"]:
                        order["filled_quantity"] = filled
                        loaded.touch(order)
                    loaded.fill_status(order)
            elif kind == "OrderCancelled":
                if order is not None and loaded.set_status(order, "cancelled"):
                    reason = str(ev.get("reason") or "USER").upper()
                    order["cancel_reason"] = reason
                    if reason not in CANCEL_REASONS:
                        log.warning("unknown cancel reason", extra={"reason": reason})
                book_moved = True
            elif kind == "OrderExpired":
                if order is not None:
                    loaded.set_status(order, "expired")
                book_moved = True
            elif kind == "OrderAmended":
                if order is not None and order["status"] not in repo.FINAL_STATUSES:
                    order["quantity"] = int(ev["quantity"])
                    order["filled_quantity"] = int(ev["filled_quantity"])
                    loaded.touch(order)
                    loaded.fill_status(order)
                book_moved = True
            elif kind == "OrderRejected":
                if order is not None and loaded.set_status(order, "rejected"):
                    order["reject_reason"] = str(ev.get("reason") or "REJECTED")
            elif kind == "CancelRejected":
                if order is not None and order["status"] not in repo.FINAL_STATUSES:
                    # The book refused the cancel (a race it lost): a new cancel may be sent.
                    await repo.update_order(
                        orm_session(session), order["order_id"], cancel_requested_at=None
                    )
            elif kind == "BookStateChanged":
                state = str(ev.get("state", "")).lower()
                if state in BOOK_STATES:
                    await repo.set_instrument_state(orm_session(session), instrument, state)
                    self._on_instrument(instrument)
            elif kind == "DayRolled":
                business_date = str(ev["business_date"])
                await repo.set_business_date(orm_session(session), business_date, only_forward=True)
                self._on_instrument("")
        await self._save(session, loaded, envelope, pushes, callbacks)
        if book_moved:
            pushes.books.add(instrument)

    async def _trade(
        self,
        session: Tx,
        instrument: str,
        ev: dict[str, Any],
        envelope: Envelope,
        loaded: _Orders,
        pushes: PendingPushes,
        events: list[hooks.Event],
    ) -> None:
        batch = self._batch(session)
        price = int(ev["price_fen"])
        quantity = int(ev["quantity"])
        amount = price * quantity
        business_date = date.fromisoformat(str(ev["business_date"]))
        taker_side = _side(ev["taker_side"])
        maker_side = "sell" if taker_side == "buy" else "buy"
        sides = (
            (ev["maker_order_id"], ev.get("maker_member_id"), maker_side, "maker"),
            (ev["taker_order_id"], ev.get("taker_member_id"), taker_side, "taker"),
        )
        for order_id, member_id, side, liquidity in sides:
            order = loaded.get(order_id)
            if order is None:
                continue
            fee = trade_fee_fen(amount, int(order["fees_fen"]))
            key = (str(ev["trade_id"]), order["order_id"])
            if key in batch.trade_keys:
                continue
            batch.trade_keys.add(key)
            batch.new_trades.append(
                {
                    "trade_id": str(ev["trade_id"]),
                    "order_id": order["order_id"],
                    "partner_id": order["partner_id"],
                    "member_id": str(member_id or order["member_id"]),
                    "instrument": instrument,
                    "side": side,
                    "price_fen": price,
                    "quantity": quantity,
                    "amount_fen": amount,
                    "fee_fen": fee,
                    "liquidity": liquidity,
                    "business_date": business_date,
                    "executed_at": envelope.occurred_at,
                    "sequence": int(ev["seq"]),
                }
            )
            order["fees_fen"] += fee
            order["filled_amount_fen"] += amount
            order["filled_quantity"] = min(order["quantity"], order["filled_quantity"] + quantity)
            loaded.touch(order)
            loaded.fill_status(order)
            trade = {
                "trade_id": str(ev["trade_id"]),
                "order_id": order["order_id"],
                "member_id": str(member_id or order["member_id"]),
                "instrument": instrument,
                "side": side,
                "price": format_fen(price),
                "quantity": quantity,
                "amount": format_fen(amount),
                "fee": format_fen(fee),
                "liquidity": liquidity,
                "business_date": business_date.isoformat(),
                "executed_at": rfc3339(envelope.occurred_at),
                "settlement_status": "pending",
            }
            events.append((order["partner_id"], "trade.executed", trade))
        pushes.trades.append(
            (
                instrument,
                {
                    "instrument": instrument,
                    "price": format_fen(price),
                    "quantity": quantity,
                    "executed_at": rfc3339(envelope.occurred_at),
                    "sequence": int(ev["seq"]),
                },
            )
        )
