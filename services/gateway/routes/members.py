"""Members and their accounts, delegated to custody with the partner's tenancy enforced
twice: here (the member must be the partner's) and by custody (``partner_id``)."""

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from services.gateway.routes.common import (
    ID_PATTERN,
    PROBLEMS,
    Cursor,
    Gw,
    Limit,
    MemberId,
    Partner,
    downstream_key,
    json_response,
)
from services.gateway.schemas import (
    Balances,
    GenericPage,
    LedgerPage,
    Member,
    MemberCreate,
    Withdrawal,
    WithdrawalCreate,
    WithdrawalPage,
)

router = APIRouter(prefix="/v1/members", tags=["members"], responses=PROBLEMS)


async def _own(gw: Gw, partner: Partner, member_id: str) -> None:
    async with gw.sessions()() as session, session.begin():
        await gw.refdata.owned_member(session, partner.partner_id, member_id)


@router.post("", status_code=201, response_model=Member)
async def create_member(body: MemberCreate, request: Request, gw: Gw, partner: Partner) -> Response:
    """Onboard an investor with a custody sub-account; the same external_ref twice is 409 MEMBER_EXISTS."""
    data = await gw.downstream.custody.json(
        "POST",
        "/internal/members",
        json={**body.model_dump(mode="json"), "partner_id": partner.partner_id},
        idempotency_key=downstream_key(request),
    )
    if isinstance(data, dict) and isinstance(data.get("member_id"), str):
        async with gw.sessions()() as session, session.begin():
            await gw.refdata.remember_member(session, data, partner.partner_id)
    return json_response(data, 201)


@router.get("/{member_id}", response_model=Member)
async def get_member(member_id: MemberId, gw: Gw, partner: Partner) -> Response:
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "GET", f"/internal/members/{member_id}", params={"partner_id": partner.partner_id}
    )


@router.get("/{member_id}/balances", response_model=Balances)
async def balances(member_id: MemberId, gw: Gw, partner: Partner) -> Response:
    """Cash and holdings: settled, held, pending_in, pending_out, available."""
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "GET", f"/internal/members/{member_id}/balances", params={"partner_id": partner.partner_id}
    )


@router.get("/{member_id}/ledger", response_model=LedgerPage)
async def ledger(
    member_id: MemberId, gw: Gw, partner: Partner, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    """The member's postings, newest first."""
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "GET",
        f"/internal/members/{member_id}/ledger",
        params={"partner_id": partner.partner_id, "limit": limit, "cursor": cursor},
    )


@router.post("/{member_id}/withdrawals", status_code=202, response_model=Withdrawal)
async def request_withdrawal(
    member_id: MemberId, body: WithdrawalCreate, request: Request, gw: Gw, partner: Partner
) -> Response:
    """Reserve cash for a withdrawal; more than available is 422 INSUFFICIENT_FUNDS."""
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "POST",
        f"/internal/members/{member_id}/withdrawals",
        params={"partner_id": partner.partner_id},
        json=body.model_dump(mode="json"),
        idempotency_key=downstream_key(request),
    )


@router.get("/{member_id}/withdrawals", response_model=WithdrawalPage)
async def list_withdrawals(
    member_id: MemberId, gw: Gw, partner: Partner, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "GET",
        f"/internal/members/{member_id}/withdrawals",
        params={"partner_id": partner.partner_id, "limit": limit, "cursor": cursor},
    )


@router.get("/{member_id}/withdrawals/{withdrawal_id}", response_model=Withdrawal)
async def get_withdrawal(
    member_id: MemberId,
    withdrawal_id: Annotated[str, Path(pattern=ID_PATTERN)],
    gw: Gw,
    partner: Partner,
) -> Response:
    await _own(gw, partner, member_id)
    return await gw.downstream.custody.proxy(
        "GET",
        f"/internal/members/{member_id}/withdrawals/{withdrawal_id}",
        params={"partner_id": partner.partner_id},
    )


@router.get("/{member_id}/settlements", response_model=GenericPage)
async def settlements(
    member_id: MemberId,
    gw: Gw,
    partner: Partner,
    business_date: Annotated[date | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The member's settlement statements (交割单), kept by clearing."""
    await _own(gw, partner, member_id)
    return await gw.downstream.clearing.proxy(
        "GET",
        f"/internal/members/{member_id}/settlements",
        params={
            "partner_id": partner.partner_id,
            "business_date": business_date.isoformat() if business_date else None,
            "limit": limit,
            "cursor": cursor,
        },
    )
