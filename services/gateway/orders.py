"""Order entry: static validation, the ``pending_new`` view row and the command to
custody, written in one transaction; cancels and amends the same way."""

import zlib
from collections.abc import Callable, Sequence
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway import repositories as repo
from services.gateway.order_writes import OrderWrites
from services.gateway.refdata import ReferenceData
from services.gateway.schemas import OrderCreate
from shared.clock import rfc3339, utc_now
from shared.contracts import (
    ORDER_AMEND,
    ORDER_CANCEL,
    ORDER_SUBMIT,
    OrderAmend,
    OrderCancel,
    OrderSubmit,
)
from shared.errors import ProblemError
from shared.ids import new_id
from shared.messaging.outbox import Draft, Outbox
from shared.money import format_fen, format_scaled, round_half_up_div


def reject(code: str, detail: str) -> ProblemError:
    return ProblemError(422, code, detail)


#: Outbox streams of order commands. A stream's sequence counter is a row locked until
#: its transaction commits, so one stream per product would serialise a busy product's
#: orders; commands are spread over stripes by order id instead. Order is kept where it
#: matters: a cancel or amend is written after its order committed, so it has a larger
#: outbox id and the relay publishes it later.
COMMAND_STRIPES = 64


def command_stream(order_id: str) -> str:
    """The outbox stream of an order's commands (all of one order's share one stream)."""
    return f"gateway:orders:{zlib.crc32(order_id.encode()) % COMMAND_STRIPES}"


def order_resource(row: Any) -> dict[str, Any]:
    """The public order resource from a view row (or anything with the same attributes)."""
    filled = int(row.filled_quantity)
    average = (
        format_scaled(round_half_up_div(int(row.filled_amount_fen) * 100, filled), 4)
        if filled
        else None
    )
    business_date: date | None = row.business_date
    return {
        "order_id": row.order_id,
        "client_order_id": row.client_order_id,
        "member_id": row.member_id,
        "instrument": row.instrument,
        "side": row.side,
        "price": format_fen(int(row.price_fen)),
        "quantity": int(row.quantity),
        "filled_quantity": filled,
        "remaining_quantity": int(row.quantity) - filled,
        "average_price": average,
        "time_in_force": row.time_in_force,
        "status": row.status,
        "reject_reason": row.reject_reason,
        "cancel_reason": row.cancel_reason,
        "business_date": business_date.isoformat() if business_date else None,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def _same_content(row: Any, body: OrderCreate) -> bool:
    return (
        row.member_id == body.member_id
        and row.instrument == body.instrument
        and row.side == body.side
        and int(row.price_fen) == body.price.fen
        and int(row.quantity) == body.quantity
        and row.time_in_force == body.time_in_force
    )


class OrderService:
    def __init__(
        self,
        refdata: ReferenceData,
        outbox: Outbox,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        writes: OrderWrites,
    ) -> None:
        self.refdata = refdata
        self.outbox = outbox
        self._sessions = sessions
        self.writes = writes

    async def validate(self, session: AsyncSession, partner_id: str, body: OrderCreate) -> None:
        """The static checks, in a fixed order; the first failure is the answer."""
        rules = await self.refdata.instrument(session, body.instrument)
        if rules is None:
            raise reject("UNKNOWN_INSTRUMENT", f"no product {body.instrument}")
        member = await self.refdata.member(session, partner_id, body.member_id)
        if member is None:
            raise ProblemError(404, "UNKNOWN_MEMBER", f"no member {body.member_id}")
        if rules.state != "trading":
            raise reject("INSTRUMENT_NOT_TRADING", f"{rules.code} is {rules.state}")
        if not rules.transferable:
            raise reject("NOT_TRANSFERABLE", f"{rules.code} is not transferable")
        price = body.price.fen
        if price <= 0 or price % rules.tick_fen:
            raise reject(
                "PRICE_OFF_TICK",
                f"price must be a positive multiple of {format_fen(rules.tick_fen)}",
            )
        if not rules.in_band(price):
            raise reject("PRICE_OUT_OF_BAND", "price is outside the product's price band")
        if body.quantity > rules.issue_size:
            raise ProblemError(
                422, "VALIDATION_FAILED", f"quantity exceeds the issue size {rules.issue_size}"
            )
        if body.quantity % rules.lot:
            raise reject("QUANTITY_OFF_LOT", f"quantity must be a multiple of {rules.lot}")
        if body.quantity < rules.min_qty:
            raise reject("BELOW_MIN_QUANTITY", f"quantity must be at least {rules.min_qty}")
        if price * body.quantity < rules.min_value_fen:
            raise reject(
                "BELOW_MIN_VALUE", f"order value must be at least {format_fen(rules.min_value_fen)}"
            )
        if body.side == "buy":
            if not member.qualified:
                raise reject("NOT_QUALIFIED", "only qualified investors may buy")
            if rules.risk_level > member.risk_tolerance:
                raise reject(
                    "UNSUITABLE_RISK_LEVEL",
                    "the product's risk level exceeds the member's tolerance",
                )

    async def place(self, partner_id: str, body: OrderCreate) -> tuple[int, dict[str, Any]]:
        """(202, the new order) or (200, the original order of this client_order_id);
        a static check that fails raises its problem."""
        result = (await self.place_many(partner_id, [body]))[0]
        if isinstance(result, ProblemError):
            raise result
        return result

    async def place_many(
        self, partner_id: str, bodies: Sequence[OrderCreate]
    ) -> list[tuple[int, dict[str, Any]] | ProblemError]:
        """Each order's answer, in order. A client_order_id used before (by an earlier
        request or earlier in this batch) answers with its order, whatever the checks say
        now; otherwise the static checks decide. The new orders and their commands are
        written in one statement; looking up earlier orders is needed only when an order
        fails a check or loses its client_order_id to another request."""
        fresh: dict[str, tuple[OrderCreate, dict[str, Any]]] = {}  # by client_order_id
        failed: dict[int, ProblemError] = {}
        repeats: set[int] = set()  # a client_order_id already fresh earlier in this batch
        # Reference data is cached in memory; the session reads the database only to
        # refresh it, and opens no connection otherwise.
        async with self._sessions()() as session, session.begin():
            business_date = await self.refdata.business_date(session)
            now = utc_now()
            for i, body in enumerate(bodies):
                if body.client_order_id in fresh:
                    repeats.add(i)
                    continue
                try:
                    await self.validate(session, partner_id, body)
                except ProblemError as problem:
                    failed[i] = problem
                    continue
                fresh[body.client_order_id] = (
                    body,
                    self._values(partner_id, body, now, business_date),
                )
        inserted: set[str] = set()
        if fresh:
            # Sorted, so two batches sharing client_order_ids wait for each other, never deadlock.
            ordered = sorted(fresh.values(), key=lambda item: item[0].client_order_id)
            commands = self.outbox.envelopes(
                [
                    Draft(ORDER_SUBMIT, ORDER_SUBMIT, dict(self._submit(partner_id, b, v)))
                    for b, v in ordered
                ],
                command_stream(str(ordered[0][1]["order_id"])),
            )
            inserted = await self.writes.insert(
                [v for _, v in ordered], commands, routing_key=ORDER_SUBMIT
            )
        lost = {cid for cid, (_, v) in fresh.items() if v["order_id"] not in inserted}
        wanted = lost | {bodies[i].client_order_id for i in failed}
        earlier = {
            cid: row
            for cid, row in (await self.writes.by_client_ids(partner_id, wanted)).items()
            if row.order_id not in inserted  # not the one this batch just wrote
        }
        results: list[tuple[int, dict[str, Any]] | ProblemError] = []
        for i, body in enumerate(bodies):
            cid = body.client_order_id
            try:
                if cid in earlier:
                    results.append(self._duplicate(earlier[cid], body))
                elif i in failed:
                    results.append(failed[i])
                elif i in repeats:
                    results.append(self._duplicate(SimpleNamespace(**fresh[cid][1]), body))
                else:
                    results.append((202, order_resource(SimpleNamespace(**fresh[cid][1]))))
            except ProblemError as problem:
                results.append(problem)
        return results

    @staticmethod
    def _values(
        partner_id: str, body: OrderCreate, now: datetime, business_date: date | None
    ) -> dict[str, Any]:
        return {
            "order_id": new_id("o"),
            "partner_id": partner_id,
            "client_order_id": body.client_order_id,
            "member_id": body.member_id,
            "instrument": body.instrument,
            "side": body.side,
            "price_fen": body.price.fen,
            "quantity": body.quantity,
            "filled_quantity": 0,
            "filled_amount_fen": 0,
            "fees_fen": 0,
            "time_in_force": body.time_in_force,
            "status": "pending_new",
            "reject_reason": None,
            "cancel_reason": None,
            "business_date": business_date,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _submit(partner_id: str, body: OrderCreate, values: dict[str, Any]) -> OrderSubmit:
        return {
            "order_id": values["order_id"],
            "client_order_id": body.client_order_id,
            "partner_id": partner_id,
            "member_id": body.member_id,
            "instrument": body.instrument,
            "side": "BUY" if body.side == "buy" else "SELL",
            "price_fen": body.price.fen,
            "quantity": body.quantity,
            "time_in_force": body.time_in_force,
        }

    @staticmethod
    def _duplicate(existing: Any, body: OrderCreate) -> tuple[int, dict[str, Any]]:
        if _same_content(existing, body):
            return 200, order_resource(existing)
        raise ProblemError(
            409,
            "DUPLICATE_CLIENT_ORDER_ID",
            f"client_order_id {body.client_order_id} was used for another order",
            extra={"order_id": existing.order_id},
        )

    async def cancel(self, session: AsyncSession, partner_id: str, order_id: str) -> dict[str, Any]:
        row = await repo.get_order(session, order_id, partner_id=partner_id, for_update=True)
        if row is None:
            raise ProblemError(404, "ORDER_NOT_FOUND", f"no order {order_id}")
        if row.status in repo.FINAL_STATUSES:
            raise ProblemError(409, "ORDER_FINAL", f"order {order_id} is already {row.status}")
        if row.cancel_requested_at is None:
            await repo.update_order(session, order_id, cancel_requested_at=utc_now())
            cancel: OrderCancel = {
                "order_id": order_id,
                "member_id": row.member_id,
                "instrument": row.instrument,
            }
            await self.outbox.add(
                session,
                [Draft(ORDER_CANCEL, ORDER_CANCEL, dict(cancel))],
                stream=command_stream(order_id),
            )
            row = await repo.get_order(session, order_id)
            assert row is not None
        return order_resource(row)

    async def amend(
        self, session: AsyncSession, partner_id: str, order_id: str, quantity: int
    ) -> dict[str, Any]:
        row = await repo.get_order(session, order_id, partner_id=partner_id, for_update=True)
        if row is None:
            raise ProblemError(404, "ORDER_NOT_FOUND", f"no order {order_id}")
        if row.status in repo.FINAL_STATUSES:
            raise ProblemError(422, "INVALID_AMEND", f"order {order_id} is already {row.status}")
        if row.cancel_requested_at is not None:
            raise ProblemError(422, "INVALID_AMEND", f"order {order_id} is being cancelled")
        if not int(row.filled_quantity) < quantity < int(row.quantity):
            raise ProblemError(
                422,
                "INVALID_AMEND",
                "the new quantity must be below the current quantity and above the filled quantity",
            )
        rules = await self.refdata.instrument(session, row.instrument)
        if rules is not None and quantity % rules.lot:
            raise ProblemError(
                422, "INVALID_AMEND", f"the new quantity must be a multiple of {rules.lot}"
            )
        amend: OrderAmend = {
            "order_id": order_id,
            "member_id": row.member_id,
            "instrument": row.instrument,
            "quantity": quantity,
        }
        await self.outbox.add(
            session,
            [Draft(ORDER_AMEND, ORDER_AMEND, dict(amend))],
            stream=command_stream(order_id),
        )
        await repo.update_order(session, order_id)
        return order_resource(row)
