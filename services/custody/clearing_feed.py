"""Routes for clearing: product listing dates and the cash movements of a date (read-only,
from custody's existing tables), and the netted settlement batch (a day's settlement sent as
clearing's per-member netting, checked against custody's own obligations)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from services.custody import settlement
from services.custody.routes import Settings
from services.custody.schemas import NettedBatchRequest
from shared.money import format_fen
from shared.transaction import RouteSession as Session

router = APIRouter(prefix="/internal/clearing", tags=["internal"])


@router.get("/listings")
async def listings(session: Session) -> dict[str, Any]:
    """Every product with the business date its issue was registered (its book's first day)."""
    rows = await session.execute(
        text(
            "SELECT reference AS instrument, min(business_date) AS listed_on "
            "FROM custody.entries WHERE kind = 'ISSUANCE' GROUP BY reference ORDER BY reference"
        )
    )
    return {
        "items": [{"instrument": r.instrument, "listed_on": r.listed_on.isoformat()} for r in rows]
    }


@router.get("/cash-movements")
async def cash_movements(
    business_date: date, session: Session, settings: Settings
) -> dict[str, Any]:
    """The cash postings of a business date on member and fee accounts (the sub-accounts the
    bank holds), summed per account, kind and reference. ``amount`` is signed (+ credit)."""
    rows = await session.execute(
        text(
            """
            SELECT a.owner_kind, m.member_id, m.sub_account, p.kind, p.reference,
                   sum(p.amount) AS amount
            FROM custody.postings p
            JOIN custody.accounts a ON a.id = p.account_id
            LEFT JOIN custody.members m ON a.owner_kind = 'member' AND m.member_id = a.owner_id
            WHERE p.business_date = :d AND p.asset = 'CNY' AND a.owner_kind IN ('member', 'fee')
            GROUP BY a.owner_kind, m.member_id, m.sub_account, p.kind, p.reference
            ORDER BY p.kind, p.reference, m.member_id
            """
        ),
        {"d": business_date},
    )
    items = []
    for r in rows:
        is_fee = r.owner_kind == "fee"
        items.append(
            {
                "member_id": "" if is_fee else r.member_id,
                "sub_account": settings.fee_sub_account if is_fee else r.sub_account,
                "kind": r.kind,
                "reference": r.reference,
                "amount": format_fen(int(r.amount)),
            }
        )
    return {"business_date": business_date.isoformat(), "items": items}


@router.post("/settlement-batches")
async def settle_netted(body: NettedBatchRequest, session: Session, settings: Settings) -> Response:
    result, applied = await settlement.apply_netted_batch(session, body, settings)
    return JSONResponse(result, status_code=201 if applied else 200)
