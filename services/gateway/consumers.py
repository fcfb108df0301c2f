"""The view updater: consumes ``gateway.events`` and keeps the order and trade views,
the reference-data cache and the business date current; queues webhooks in the same
transaction and pushes WebSocket messages once it has committed.

Book events arrive in book sequence on a single-active-consumer queue, and the inbox
applies each message once, so the view follows the book exactly. Final states
(filled, cancelled, expired, rejected) are never left once reached.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import date
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import bindparam, select, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway import repositories as repo
from services.gateway import webhooks as hooks
from services.gateway.models import orders
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
from shared.fees import trade_fee_fen
from shared.messaging.envelope import Envelope
from shared.money import format_fen

log = logging.getLogger(__name__)

CANCEL_REASONS = {"USER", "IOC_REMAINDER", "FOK_UNFILLED", "SELF_TRADE_PREVENTED", "DELISTED"}
BOOK_STATES = {"trading", "halted", "delisted"}
_PUSHES = "gateway.pushes"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
NOTIFY_LIMIT = 7900

_write_order = (
    update(orders)
    .where(orders.c.order_id == bindparam("b_order_id"))
    .values(
        quantity=bindparam("b_quantity"),
        filled_quantity=bindparam("b_filled_quantity"),
        filled_amount_fen=bindparam("b_filled_amount_fen"),
        fees_fen=bindparam("b_fees_fen"),
        status=bindparam("b_status"),
        reject_reason=bindparam("b_reject_reason"),
        cancel_reason=bindparam("b_cancel_reason"),
        updated_at=bindparam("b_updated_at"),
    )
)


def _side(value: object) -> str:
    return "buy" if str(value).upper() == "BUY" else "sell"


class _Orders:
    """The order rows one message touches, loaded at once and written back at once."""

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


class ViewUpdater:
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

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
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
                await repo.upsert_instrument(session, data)
                self._on_instrument(data["code"])
        elif envelope.type == BUSINESS_DATE_ROLLED:
            await repo.set_business_date(session, str(payload["business_date"]), only_forward=True)
            self._on_instrument("")
        elif envelope.type == WITHDRAWAL_UPDATED:
            await self._withdrawal(session, payload, pushes)
        elif envelope.type == SETTLEMENT_COMPLETED:
            await self._settlement(session, payload, pushes)
        else:
            log.debug("ignored message", extra={"type": envelope.type})
        if self._notify_channel is not None:
            await self._notify(session, pushes.drain())

    async def _notify(self, session: AsyncSession, messages: list[dict[str, Any]]) -> None:
        """Hand the pushes to every gateway instance; PostgreSQL delivers them on commit."""
        payloads = []
        for message in messages:
            payload = orjson.dumps(message).decode()
            if len(payload.encode()) < NOTIFY_LIMIT:
                payloads.append(payload)
            else:
                log.warning(
                    "websocket push too large for NOTIFY; dropped", extra={"kind": message["k"]}
                )
        if payloads:
            await session.execute(
                text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p"),
                {"channel": self._notify_channel, "payloads": payloads},
            )

    def _pushes(self, session: AsyncSession) -> PendingPushes:
        pushes = session.info.get(_PUSHES)
        if isinstance(pushes, PendingPushes):
            return pushes
        pushes = PendingPushes()
        session.info[_PUSHES] = pushes
        loop = asyncio.get_running_loop()
        on_commit = self._on_commit

        def after_commit(_: object) -> None:
            loop.call_soon(on_commit, pushes)

        sa_event.listen(session.sync_session, "after_commit", after_commit, once=True)
        return pushes

    async def _load(self, session: AsyncSession, order_ids: set[str]) -> _Orders:
        if not order_ids:
            return _Orders({})
        result = await session.execute(select(orders).where(orders.c.order_id.in_(order_ids)))
        return _Orders({row.order_id: dict(row._mapping) for row in result})

    async def _save(
        self,
        session: AsyncSession,
        loaded: _Orders,
        envelope: Envelope,
        pushes: PendingPushes,
        events: list[hooks.Event],
    ) -> None:
        """Write the changed orders back and queue their callbacks (and any others)."""
        if loaded.changed:
            await self._write(session, loaded, envelope, pushes, events)
        if await hooks.enqueue(session, events):
            pushes.webhooks = True

    async def _write(
        self,
        session: AsyncSession,
        loaded: _Orders,
        envelope: Envelope,
        pushes: PendingPushes,
        events: list[hooks.Event],
    ) -> None:
        changed = [loaded.rows[oid] for oid in sorted(loaded.changed)]
        for order in changed:
            order["updated_at"] = envelope.occurred_at
        await session.execute(
            _write_order,
            [
                {
                    f"b_{k}": order[k]
                    for k in (
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
                }
                for order in changed
            ],
        )
        for order in changed:
            resource = order_resource(SimpleNamespace(**order))
            pushes.orders[order["order_id"]] = (order["partner_id"], resource)
            events.append((order["partner_id"], "order.updated", resource))

    async def _withdrawal(
        self, session: AsyncSession, payload: dict[str, Any], pushes: PendingPushes
    ) -> None:
        data = {k: v for k, v in payload.items() if k != "partner_id"}
        partner_id = payload.get("partner_id") or await repo.partner_of_member(
            session, str(payload["member_id"])
        )
        if partner_id is None:
            log.warning("withdrawal of an unknown member", extra={"member_id": data["member_id"]})
            return
        if await hooks.enqueue(session, [(str(partner_id), "withdrawal.updated", data)]):
            pushes.webhooks = True

    async def _settlement(
        self, session: AsyncSession, payload: dict[str, Any], pushes: PendingPushes
    ) -> None:
        """One ``settlement.completed`` per partner, with its own members' results only."""
        members = [m for m in payload.get("members", []) if isinstance(m, dict)]
        owners = await repo.partners_of_members(session, {str(m["member_id"]) for m in members})
        per_partner: dict[str, list[dict[str, Any]]] = {}
        for m in members:
            partner_id = owners.get(str(m["member_id"]))
            if partner_id is not None:
                per_partner.setdefault(partner_id, []).append(m)
        events: list[hooks.Event] = [
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
        ]
        if await hooks.enqueue(session, events):
            pushes.webhooks = True

    async def _rejected(
        self, session: AsyncSession, envelope: Envelope, pushes: PendingPushes
    ) -> None:
        order_id = str(envelope.payload.get("order_id"))
        loaded = await self._load(session, {order_id})
        order = loaded.get(order_id)
        if order is None:
            return
        if loaded.set_status(order, "rejected"):
            order["reject_reason"] = str(envelope.payload.get("reason") or "REJECTED")
        await self._save(session, loaded, envelope, pushes, [])

    async def _book(self, session: AsyncSession, envelope: Envelope, pushes: PendingPushes) -> None:
        instrument = str(envelope.payload.get("instrument"))
        events = [e for e in envelope.payload.get("events", []) if isinstance(e, dict)]
        ids: set[str] = set()
        for ev in events:
            for key in ("order_id", "maker_order_id", "taker_order_id"):
                if isinstance(ev.get(key), str):
                    ids.add(ev[key])
        loaded = await self._load(session, ids)
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
                    await repo.update_order(session, order["order_id"], cancel_requested_at=None)
            elif kind == "BookStateChanged":
                state = str(ev.get("state", "")).lower()
                if state in BOOK_STATES:
                    await repo.set_instrument_state(session, instrument, state)
                    self._on_instrument(instrument)
            elif kind == "DayRolled":
                await repo.set_business_date(session, str(ev["business_date"]), only_forward=True)
                self._on_instrument("")
        await self._save(session, loaded, envelope, pushes, callbacks)
        if book_moved:
            pushes.books.add(instrument)

    async def _trade(
        self,
        session: AsyncSession,
        instrument: str,
        ev: dict[str, Any],
        envelope: Envelope,
        loaded: _Orders,
        pushes: PendingPushes,
        events: list[hooks.Event],
    ) -> None:
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
            inserted = await repo.insert_trade(
                session,
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
                },
            )
            if not inserted:
                continue
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
