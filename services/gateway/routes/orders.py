"""Orders and trades (partner): entry, batch entry, queries, cancel and amend."""

import time
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.gateway import repositories as repo
from services.gateway.context import Gateway
from services.gateway.orders import order_resource
from services.gateway.routes.common import (
    ID_PATTERN,
    PROBLEMS,
    Cursor,
    Gw,
    Limit,
    OrderId,
    Partner,
    json_response,
)
from services.gateway.schemas import (
    BatchResult,
    Order,
    OrderAmend,
    OrderBatch,
    OrderCreate,
    OrderPage,
    OrderStatus,
    TradePage,
)
from shared.clock import rfc3339
from shared.errors import ProblemError
from shared.money import format_fen

router = APIRouter(tags=["orders"], responses=PROBLEMS)

SETTLED_EOD_STATUSES = {"settled", "reconciled", "breaks"}
UNSETTLED_RECHECK_SECONDS = 2.0


@router.post(
    "/v1/orders",
    status_code=202,
    response_model=Order,
    responses={200: {"model": Order, "description": "the original order of this client_order_id"}},
)
async def place_order(body: OrderCreate, gw: Gw, partner: Partner) -> Response:
    """Submit a limit order. Static checks answer at once (422/404); balance checks follow
    the 202 and end the order ``rejected``."""
    return await order_answer(gw, partner.partner_id, body)


async def order_answer(gw: Gateway, partner_id: str, body: OrderCreate) -> Response:
    """The answer to one order (also given by the edge's fast path, order_entry_path.py)."""
    status, order = await gw.orders.place(partner_id, body)
    return json_response(order, status)


@router.post("/v1/orders/batch", status_code=202, response_model=BatchResult)
async def place_orders(body: OrderBatch, gw: Gw, partner: Partner) -> Response:
    """Up to 100 orders; each result is the order or its problem, in order."""
    return await batch_answer(gw, partner.partner_id, body)


async def batch_answer(gw: Gateway, partner_id: str, body: OrderBatch) -> Response:
    """The answer to a batch of orders (also given by the edge's fast path)."""
    answers = await gw.orders.place_many(partner_id, body.orders)
    results = [a.to_dict() if isinstance(a, ProblemError) else a[1] for a in answers]
    return json_response({"results": results}, 202)


@router.get("/v1/orders/{order_id}", response_model=Order)
async def get_order(order_id: OrderId, gw: Gw, partner: Partner) -> Response:
    async with gw.sessions()() as session:
        row = await repo.get_order(session, order_id, partner_id=partner.partner_id)
    if row is None:
        raise ProblemError(404, "ORDER_NOT_FOUND", f"no order {order_id}")
    return json_response(order_resource(row))


@router.get("/v1/orders", response_model=OrderPage)
async def list_orders(
    gw: Gw,
    partner: Partner,
    member_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    instrument: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")] = None,
    status: OrderStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The partner's orders, newest first; filtering by another partner's member is 404."""
    async with gw.sessions()() as session, session.begin():
        if member_id is not None:
            await gw.refdata.owned_member(session, partner.partner_id, member_id)
        rows = await repo.list_orders(
            session,
            partner_id=partner.partner_id,
            member_id=member_id,
            instrument=instrument,
            status=status,
            before=repo.decode_cursor(cursor),
            limit=limit + 1,
        )
    next_cursor = repo.encode_cursor(rows[limit - 1].order_id) if len(rows) > limit else None
    return json_response(
        {"items": [order_resource(r) for r in rows[:limit]], "next_cursor": next_cursor}
    )


@router.delete("/v1/orders/{order_id}", status_code=202, response_model=Order)
async def cancel_order(order_id: OrderId, gw: Gw, partner: Partner) -> Response:
    """Cancel: 202 and the order ends ``cancelled`` (or ``filled`` if the fill came first);
    a final order is 409 ORDER_FINAL. The request is recorded and never lost."""
    async with gw.sessions()() as session, session.begin():
        order = await gw.orders.cancel(session, partner.partner_id, order_id)
    return json_response(order, 202)


@router.patch("/v1/orders/{order_id}", status_code=202, response_model=Order)
async def amend_order(order_id: OrderId, body: OrderAmend, gw: Gw, partner: Partner) -> Response:
    """Reduce the total quantity (below the current, above the filled), keeping priority."""
    async with gw.sessions()() as session, session.begin():
        order = await gw.orders.amend(session, partner.partner_id, order_id, body.quantity)
    return json_response(order, 202)


async def _settled_dates(gw: Gateway, dates: set[date]) -> set[date]:
    """Which of these business dates clearing has settled. A settled date is final and
    remembered; an unsettled one is asked again after a few seconds, not on every call."""
    settled = {d for d in dates if d in gw.settled_dates}
    now = time.monotonic()
    for day in dates - settled:
        if gw.unsettled_until.get(day, 0.0) > now:
            continue
        try:
            run = await gw.downstream.clearing.json("GET", f"/internal/eod/{day.isoformat()}")
        except ProblemError:
            run = None
        if isinstance(run, dict) and run.get("status") in SETTLED_EOD_STATUSES:
            gw.settled_dates.add(day)
            gw.unsettled_until.pop(day, None)
            settled.add(day)
        else:
            gw.unsettled_until[day] = now + UNSETTLED_RECHECK_SECONDS
    return settled


@router.get("/v1/trades", response_model=TradePage)
async def list_trades(
    gw: Gw,
    partner: Partner,
    member_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    instrument: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,16}$")] = None,
    business_date: date | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The partner's executions, newest first, with the fee charged; never the counterparty."""
    before = repo.decode_int_cursor(cursor)
    async with gw.sessions()() as session, session.begin():
        if member_id is not None:
            await gw.refdata.owned_member(session, partner.partner_id, member_id)
        rows = await repo.list_trades(
            session,
            partner_id=partner.partner_id,
            member_id=member_id,
            instrument=instrument,
            business_date=business_date,
            before=before,
            limit=limit + 1,
        )
    page = rows[:limit]
    settled = await _settled_dates(gw, {r.business_date for r in page})
    items = [
        {
            "trade_id": r.trade_id,
            "order_id": r.order_id,
            "member_id": r.member_id,
            "instrument": r.instrument,
            "side": r.side,
            "price": format_fen(int(r.price_fen)),
            "quantity": int(r.quantity),
            "amount": format_fen(int(r.amount_fen)),
            "fee": format_fen(int(r.fee_fen)),
            "liquidity": r.liquidity,
            "business_date": r.business_date.isoformat(),
            "executed_at": rfc3339(r.executed_at),
            "settlement_status": "settled" if r.business_date in settled else "pending",
        }
        for r in page
    ]
    next_cursor = repo.encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return json_response({"items": items, "next_cursor": next_cursor})
