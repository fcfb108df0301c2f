"""Clearing's internal HTTP routes (``/internal/...``), for the gateway's staff endpoints
and the CLI: business date, EOD runs, settlement reports and statements, instruction
files, reconciliation, captured trades and the audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.clearing import recon, store
from services.clearing.eod import EodRunner, start_run
from shared.clock import rfc3339
from shared.errors import ProblemError
from shared.faults import crash_point
from shared.runtime import ServiceRuntime
from shared.transaction import RouteSession as Session

router = APIRouter(prefix="/internal", tags=["internal"])


def runner_dep(request: Request) -> EodRunner:
    runner = request.app.state.eod_runner
    assert isinstance(runner, EodRunner)
    return runner


Runner = Annotated[EodRunner, Depends(runner_dep)]


class EodRequest(BaseModel):
    business_date: date


@router.get("/business-date")
async def business_date(session: Session) -> dict[str, Any]:
    current = await store.business_date(session)
    closing = (
        await session.execute(
            text("SELECT 1 FROM clearing.eod_runs WHERE status = 'running' LIMIT 1")
        )
    ).first()
    return {"business_date": current.isoformat(), "status": "closing" if closing else "open"}


@router.post("/eod", status_code=202)
async def trigger_eod(body: EodRequest, request: Request, runner: Runner) -> dict[str, Any]:
    runtime: ServiceRuntime = request.app.state.runtime
    async with runtime.session_factory() as session, session.begin():
        created, row = await start_run(session, runtime, body.business_date)
    if created:
        crash_point("eod_after_roll")
    runner.wake()
    return store.run_view(row)


@router.get("/eod/{business_date}")
async def get_eod(business_date: date, session: Session) -> dict[str, Any]:
    row = await store.get_run(session, business_date)
    if row is None:
        raise ProblemError(404, "UNKNOWN_EOD_RUN", f"no end-of-day run for {business_date}")
    return store.run_view(row)


async def _report(
    session: AsyncSession, business_date: date, member_id: str | None = None
) -> dict[str, Any]:
    row = await store.get_run(session, business_date)
    if row is None or row.report is None:
        raise ProblemError(
            404, "SETTLEMENT_NOT_FOUND", f"business date {business_date} is not settled"
        )
    report: dict[str, Any] = dict(row.report)
    report["status"] = row.status
    if "units" not in report:  # stored without them: from clearing.settlement_units
        report = await store.with_units(session, business_date, report, member_id)
    return report


@router.get("/settlements/{business_date}")
async def settlement_report(business_date: date, session: Session) -> dict[str, Any]:
    return await _report(session, business_date)


@router.get("/settlements/{business_date}/instructions")
async def instruction_file(business_date: date, session: Session) -> Response:
    content = (
        await session.execute(
            text("SELECT content FROM clearing.instruction_files WHERE business_date = :d"),
            {"d": business_date},
        )
    ).scalar_one_or_none()
    if content is None:
        raise ProblemError(404, "SETTLEMENT_NOT_FOUND", f"no instruction file for {business_date}")
    return Response(
        content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="instructions-{business_date}.csv"'},
    )


async def _statement(
    session: AsyncSession, member_id: str, business_date: date, report: dict[str, Any]
) -> dict[str, Any] | None:
    member = next((m for m in report["members"] if m["member_id"] == member_id), None)
    if member is None:
        return None
    rows = await session.execute(
        text(
            f"SELECT {store.TRADE_COLUMNS} FROM clearing.trades WHERE business_date = :d "
            "AND (buyer_member_id = :m OR seller_member_id = :m) ORDER BY executed_at, trade_id"
        ),
        {"d": business_date, "m": member_id},
    )
    trades = []
    for r in rows:
        buying = r.buyer_member_id == member_id
        trade = store.trade_view(r)
        trades.append(
            {
                "trade_id": trade["trade_id"],
                "instrument": trade["instrument"],
                "side": "BUY" if buying else "SELL",
                "order_id": r.buy_order_id if buying else r.sell_order_id,
                "price": trade["price"],
                "quantity": trade["quantity"],
                "amount": trade["amount"],
                "fee": trade["buyer_fee"] if buying else trade["seller_fee"],
                "executed_at": trade["executed_at"],
            }
        )
    return {"business_date": business_date.isoformat(), **member, "trades": trades}


@router.get("/members/{member_id}/settlements")
async def member_statements(
    member_id: str, session: Session, business_date: date | None = None
) -> dict[str, Any]:
    """The member's statements (交割单): one per settled date it took part in."""
    if business_date is not None:
        dates = [business_date]
    else:
        dates = list(
            (
                await session.execute(
                    text(
                        "SELECT business_date FROM clearing.eod_runs WHERE report IS NOT NULL "
                        "AND report->'members' @> CAST(:m AS jsonb) ORDER BY business_date"
                    ),
                    {"m": orjson.dumps([{"member_id": member_id}]).decode()},
                )
            ).scalars()
        )
    items = []
    for d in dates:
        statement = await _statement(session, member_id, d, await _report(session, d, member_id))
        if statement is not None:
            items.append(statement)
    return {"member_id": member_id, "items": items, "next_cursor": None}


@router.post("/reconciliations/{business_date}", status_code=201)
async def load_reconciliation(
    business_date: date, request: Request, runner: Runner
) -> dict[str, Any]:
    runtime: ServiceRuntime = request.app.state.runtime
    content = await request.body()
    return await recon.load_statement(
        runtime.session_factory, runner.custody, business_date, content
    )


@router.get("/reconciliations/{business_date}")
async def latest_reconciliation(business_date: date, session: Session) -> dict[str, Any]:
    row = (
        await session.execute(
            text(
                "SELECT id, report, loaded_at FROM clearing.reconciliations "
                "WHERE business_date = :d ORDER BY id DESC LIMIT 1"
            ),
            {"d": business_date},
        )
    ).first()
    if row is None:
        raise ProblemError(
            404, "UNKNOWN_RECONCILIATION", f"no statement loaded for {business_date}"
        )
    return {"reconciliation_id": row.id, **dict(row.report), "loaded_at": rfc3339(row.loaded_at)}


@router.get("/reconciliations/{business_date}/history")
async def reconciliation_history(business_date: date, session: Session) -> dict[str, Any]:
    rows = await session.execute(
        text(
            "SELECT id, status, loaded_at FROM clearing.reconciliations "
            "WHERE business_date = :d ORDER BY id"
        ),
        {"d": business_date},
    )
    return {
        "business_date": business_date.isoformat(),
        "items": [
            {"reconciliation_id": r.id, "status": r.status, "loaded_at": rfc3339(r.loaded_at)}
            for r in rows
        ],
    }


@router.get("/trades")
async def trades(
    session: Session,
    business_date: date | None = None,
    instrument: str | None = None,
    member_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Captured trades with the fee each side was charged."""
    rows = await session.execute(
        text(
            f"""
            SELECT {store.TRADE_COLUMNS} FROM clearing.trades
            WHERE (CAST(:d AS date) IS NULL OR business_date = :d)
              AND (CAST(:i AS text) IS NULL OR instrument = :i)
              AND (CAST(:m AS text) IS NULL OR buyer_member_id = :m OR seller_member_id = :m)
            ORDER BY business_date, instrument, book_seq LIMIT :limit
            """
        ),
        {"d": business_date, "i": instrument, "m": member_id, "limit": limit},
    )
    return {"items": [store.trade_view(r) for r in rows], "next_cursor": None}


@router.get("/audit")
async def audit(session: Session, since: datetime | None = None) -> dict[str, Any]:
    rows = await session.execute(
        text(
            "SELECT id, at, action, business_date, detail FROM clearing.audit "
            "WHERE CAST(:since AS timestamptz) IS NULL OR at >= :since ORDER BY id LIMIT 1000"
        ),
        {"since": since},
    )
    return {
        "items": [
            {
                "id": r.id,
                "at": rfc3339(r.at),
                "action": r.action,
                "business_date": None if r.business_date is None else r.business_date.isoformat(),
                "detail": r.detail,
            }
            for r in rows
        ]
    }
