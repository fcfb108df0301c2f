"""Custody's internal HTTP routes (``/internal/...``): the public API's JSON shapes and
problem documents, for the gateway and clearing. Not exposed publicly."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from services.custody import cash, registry, repository, settlement, views
from services.custody.schemas import (
    AllocationRequest,
    DepositCreate,
    InstrumentCreate,
    MemberCreate,
    SettlementBatchRequest,
    WithdrawalCreate,
)
from services.custody.settings import CustodySettings
from shared.errors import ProblemError
from shared.money import format_fen
from shared.transaction import RouteSession as Session

router = APIRouter(prefix="/internal", tags=["internal"])


def settings_dep(request: Request) -> CustodySettings:
    settings = request.app.state.runtime.settings
    assert isinstance(settings, CustodySettings)
    return settings


Settings = Annotated[CustodySettings, Depends(settings_dep)]
PartnerId = Annotated[str | None, Query(max_length=64)]


# --- members --------------------------------------------------------------------------


@router.post("/members", status_code=201)
async def create_member(body: MemberCreate, session: Session, settings: Settings) -> dict[str, Any]:
    return views.member(await registry.create_member(session, body, settings))


@router.get("/members/{member_id}")
async def get_member(
    member_id: str, session: Session, partner_id: PartnerId = None
) -> dict[str, Any]:
    return views.member(await registry.member_of_partner(session, member_id, partner_id))


@router.get("/members/{member_id}/balances")
async def balances(
    member_id: str, session: Session, partner_id: PartnerId = None
) -> dict[str, Any]:
    member = await registry.member_of_partner(session, member_id, partner_id)
    return views.balances(member.member_id, await repository.member_accounts(session, member_id))


def _parse_cursor(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    try:
        seq, line = cursor.split(":")
        return int(seq), int(line)
    except ValueError as exc:
        raise ProblemError(
            422, "INVALID_CURSOR", "the cursor is not one this service issued"
        ) from exc


@router.get("/members/{member_id}/ledger")
async def member_ledger(
    member_id: str,
    session: Session,
    partner_id: PartnerId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    await registry.member_of_partner(session, member_id, partner_id)
    rows = await repository.member_postings(session, member_id, limit + 1, _parse_cursor(cursor))
    page = rows[:limit]
    next_cursor = f"{page[-1].entry_seq}:{page[-1].line}" if len(rows) > limit else None
    return {"items": [views.posting(r) for r in page], "next_cursor": next_cursor}


# --- cash -----------------------------------------------------------------------------


@router.post("/deposits", status_code=201)
async def deposit(body: DepositCreate, session: Session) -> dict[str, Any]:
    row, _ = await cash.deposit(session, body)
    return views.deposit(row)


@router.post("/members/{member_id}/withdrawals", status_code=202)
async def withdraw(
    member_id: str, body: WithdrawalCreate, session: Session, partner_id: PartnerId = None
) -> dict[str, Any]:
    return views.withdrawal(await cash.request_withdrawal(session, member_id, partner_id, body))


@router.get("/members/{member_id}/withdrawals")
async def list_withdrawals(
    member_id: str, session: Session, partner_id: PartnerId = None
) -> dict[str, Any]:
    await registry.member_of_partner(session, member_id, partner_id)
    rows = await cash.list_withdrawals(session, member_id)
    return {"items": [views.withdrawal(r) for r in rows], "next_cursor": None}


@router.get("/members/{member_id}/withdrawals/{withdrawal_id}")
async def get_withdrawal(
    member_id: str, withdrawal_id: str, session: Session, partner_id: PartnerId = None
) -> dict[str, Any]:
    await registry.member_of_partner(session, member_id, partner_id)
    row = await cash.get_withdrawal(session, member_id, withdrawal_id, partner_id)
    if row is None:
        raise ProblemError(404, "UNKNOWN_WITHDRAWAL", f"no withdrawal {withdrawal_id}")
    return views.withdrawal(row)


@router.post("/withdrawals/{withdrawal_id}/complete")
async def complete_withdrawal(withdrawal_id: str, session: Session) -> dict[str, Any]:
    return views.withdrawal(await cash.complete_withdrawal(session, withdrawal_id))


# --- instruments ----------------------------------------------------------------------


@router.post("/instruments", status_code=201)
async def create_instrument(
    body: InstrumentCreate, session: Session, settings: Settings
) -> dict[str, Any]:
    return views.instrument(await registry.create_instrument(session, body, settings))


@router.get("/instruments")
async def list_instruments(session: Session) -> dict[str, Any]:
    rows = await repository.list_products(session)
    return {"items": [views.instrument(r) for r in rows], "next_cursor": None}


@router.get("/instruments/{code}")
async def get_instrument(code: str, session: Session) -> dict[str, Any]:
    return views.instrument(await registry.get_instrument(session, code))


@router.post("/instruments/{code}/allocations", status_code=201)
async def allocate(code: str, body: AllocationRequest, session: Session) -> dict[str, Any]:
    return await registry.allocate(session, code, body)


@router.get("/instruments/{code}/holders")
async def holders(code: str, session: Session) -> dict[str, Any]:
    product = await registry.get_instrument(session, code)
    rows = await repository.holders(session, code)
    return {
        "instrument": code,
        "holder_count": product.holder_count,
        "max_holders": product.max_holders,
        "items": [
            {
                "member_id": r.member_id,
                "settled": r.settled,
                "held": r.held,
                "pending_in": r.pending_in,
                "pending_out": r.pending_out,
                "available": r.settled - r.held - r.pending_out,
            }
            for r in rows
        ],
    }


# --- accounts and settlement ----------------------------------------------------------


@router.get("/accounts")
async def accounts(
    session: Session,
    settings: Settings,
    asset: str = "CNY",
    as_of: date | None = None,
) -> dict[str, Any]:
    if asset != "CNY":
        raise ProblemError(422, "UNSUPPORTED_ASSET", "only asset=CNY sub-accounts are listed")
    rows = await repository.cash_accounts_as_of(session, as_of)
    items = []
    for r in rows:
        is_fee = r.owner_kind == "fee"
        items.append(
            {
                "member_id": "" if is_fee else r.member_id,
                "sub_account": settings.fee_sub_account if is_fee else r.sub_account,
                "settled": format_fen(int(r.settled)),
                "held": format_fen(r.held),
                "available": format_fen(r.settled_now - r.held - r.pending_out),
            }
        )
    return {"items": items, "next_cursor": None}


@router.post("/settlement-batches")
async def settle(body: SettlementBatchRequest, session: Session, settings: Settings) -> Response:
    result, applied = await settlement.apply_batch(session, body, settings)
    return JSONResponse(result, status_code=201 if applied else 200)


@router.get("/settlement-batches/{batch_id}")
async def get_batch(batch_id: str, session: Session) -> dict[str, Any]:
    result = await settlement.get_batch(session, batch_id)
    if result is None:
        raise ProblemError(404, "UNKNOWN_BATCH", f"no settlement batch {batch_id}")
    return result
