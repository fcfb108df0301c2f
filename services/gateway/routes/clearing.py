"""Clearing and custody operations for staff: business date, deposits, EOD, settlement
reports, reconciliation and accounts (role operator; auditor may read)."""

from datetime import date

from fastapi import APIRouter, Body, Query, Request, Response

from services.gateway.routes.common import (
    PROBLEMS,
    Cursor,
    DatePath,
    Gw,
    Limit,
    Operator,
    StaffReader,
    downstream_key,
)
from services.gateway.schemas import BusinessDate, DepositCreate, EodCreate, EodRun, GenericPage

router = APIRouter(prefix="/v1/admin", tags=["clearing"], responses=PROBLEMS)


@router.get("/business-date", response_model=BusinessDate)
async def business_date(gw: Gw, staff: StaffReader) -> Response:
    return await gw.downstream.clearing.proxy("GET", "/internal/business-date")


@router.post("/deposits", status_code=201)
async def deposit(body: DepositCreate, request: Request, gw: Gw, staff: Operator) -> Response:
    """A bank deposit notice; a repeated bank_reference credits nothing more."""
    return await gw.downstream.custody.proxy(
        "POST",
        "/internal/deposits",
        json=body.model_dump(mode="json"),
        idempotency_key=downstream_key(request),
    )


@router.post("/eod", status_code=202, response_model=EodRun)
async def run_eod(body: EodCreate, request: Request, gw: Gw, staff: Operator) -> Response:
    """Roll the day and run settlement; a repeat answers the same run."""
    return await gw.downstream.clearing.proxy(
        "POST",
        "/internal/eod",
        json=body.model_dump(mode="json"),
        idempotency_key=downstream_key(request),
    )


@router.get("/eod/{business_date}", response_model=EodRun)
async def eod_status(business_date: DatePath, gw: Gw, staff: StaffReader) -> Response:
    return await gw.downstream.clearing.proxy("GET", f"/internal/eod/{business_date}")


@router.get("/settlements/{business_date}")
async def settlement_report(business_date: DatePath, gw: Gw, staff: StaffReader) -> Response:
    """Per member net cash and fees, per member and product net units, totals."""
    return await gw.downstream.clearing.proxy("GET", f"/internal/settlements/{business_date}")


@router.get(
    "/settlements/{business_date}/instructions",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def settlement_instructions(business_date: DatePath, gw: Gw, staff: StaffReader) -> Response:
    """The settlement instruction file (清算文件), text/csv."""
    return await gw.downstream.clearing.proxy(
        "GET", f"/internal/settlements/{business_date}/instructions"
    )


@router.post("/reconciliations/{business_date}", status_code=201)
async def reconcile(
    business_date: DatePath,
    request: Request,
    gw: Gw,
    staff: Operator,
    statement: bytes = Body(
        media_type="text/csv", description="the bank statement file (对账文件)"
    ),
) -> Response:
    """Load the bank statement for the date and reconcile: 201 the report."""
    return await gw.downstream.clearing.proxy(
        "POST",
        f"/internal/reconciliations/{business_date}",
        content=await request.body(),
        content_type="text/csv",
        idempotency_key=downstream_key(request),
    )


@router.get("/reconciliations/{business_date}")
async def reconciliation_report(business_date: DatePath, gw: Gw, staff: StaffReader) -> Response:
    return await gw.downstream.clearing.proxy("GET", f"/internal/reconciliations/{business_date}")


@router.get("/accounts", response_model=GenericPage)
async def accounts(
    gw: Gw,
    staff: StaffReader,
    asset: str = Query(default="CNY", pattern=r"^[A-Z0-9]{3,16}$"),
    as_of: date | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Every custody account of the asset; with as_of, settled at the end of that date."""
    return await gw.downstream.custody.proxy(
        "GET",
        "/internal/accounts",
        params={
            "asset": asset,
            "as_of": as_of.isoformat() if as_of else None,
            "limit": limit,
            "cursor": cursor,
        },
    )
