"""Clearing's reads and writes that more than one module needs."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import rfc3339
from shared.money import format_fen

TRADE_COLUMNS = (
    "trade_id, instrument, business_date, book_seq, price_fen, quantity, amount_fen, "
    "buyer_member_id, seller_member_id, buy_order_id, sell_order_id, taker_side, "
    "buyer_fee_fen, seller_fee_fen, executed_at"
)


async def business_date(session: AsyncSession, *, lock: bool = False) -> date:
    sql = "SELECT business_date FROM clearing.business_day WHERE id = 1"
    value = (await session.execute(text(sql + (" FOR UPDATE" if lock else "")))).scalar_one()
    assert isinstance(value, date)
    return value


async def audit(
    session: AsyncSession, action: str, business_date: date | None, detail: dict[str, Any]
) -> None:
    await session.execute(
        text(
            "INSERT INTO clearing.audit (action, business_date, detail) "
            "VALUES (:a, :d, CAST(:detail AS jsonb))"
        ),
        {"a": action, "d": business_date, "detail": orjson.dumps(detail).decode()},
    )


async def get_run(session: AsyncSession, business_date: date) -> Row[Any] | None:
    return (
        await session.execute(
            text("SELECT * FROM clearing.eod_runs WHERE business_date = :d"), {"d": business_date}
        )
    ).first()


def run_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "business_date": row.business_date.isoformat(),
        "status": row.status,
        "phase": row.phase,
        "progress": {"done": row.progress_done, "total": row.progress_total},
        "trade_count": row.trade_count,
        "fee_total": None if row.fee_total_fen is None else format_fen(row.fee_total_fen),
        "started_at": rfc3339(row.started_at),
        "finished_at": None if row.finished_at is None else rfc3339(row.finished_at),
        "batch_id": row.batch_id,
        "error": row.error,
    }


def trade_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "trade_id": row.trade_id,
        "instrument": row.instrument,
        "business_date": row.business_date.isoformat(),
        "seq": row.book_seq,
        "price": format_fen(row.price_fen),
        "quantity": row.quantity,
        "amount": format_fen(row.amount_fen),
        "buyer_member_id": row.buyer_member_id,
        "seller_member_id": row.seller_member_id,
        "buy_order_id": row.buy_order_id,
        "sell_order_id": row.sell_order_id,
        "taker_side": row.taker_side,
        "buyer_fee": format_fen(row.buyer_fee_fen),
        "seller_fee": format_fen(row.seller_fee_fen),
        "executed_at": rfc3339(row.executed_at),
    }


async def with_units(
    session: AsyncSession, business_date: date, report: dict[str, Any], member_id: str | None = None
) -> dict[str, Any]:
    """The settlement report with each member's net units per product (``members[].units``
    and ``units``), read from ``clearing.settlement_units``; only one member's with
    ``member_id``."""
    sql = (
        "SELECT member_id, instrument, net_units FROM clearing.settlement_units "
        "WHERE business_date = :d"
    )
    params: dict[str, Any] = {"d": business_date}
    if member_id is not None:
        sql += " AND member_id = :m"
        params["m"] = member_id
    rows = (await session.execute(text(sql + " ORDER BY member_id, instrument"), params)).all()
    per_member: dict[str, list[dict[str, Any]]] = {}
    for m, i, q in rows:
        per_member.setdefault(m, []).append({"instrument": i, "net_units": int(q)})
    members = [{**m, "units": per_member.get(m["member_id"], [])} for m in report["members"]]
    units = [{"member_id": m, "instrument": i, "net_units": int(q)} for m, i, q in rows]
    return {**report, "members": members, "units": units}
