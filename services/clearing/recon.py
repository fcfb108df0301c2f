"""Loading a bank statement: the exchange side from custody, the domain engine, the report
kept for audit (every load), the run's status, and completed withdrawals."""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.clearing import store
from services.clearing.custody_client import CustodyClient, CustodyRefused
from services.clearing.domain.bank_files import BankFileError, parse_statement
from services.clearing.domain.model import Direction, MovementKind
from services.clearing.domain.netting import (
    fee_exchange_reference,
    fee_reference,
    trade_net_reference,
)
from services.clearing.domain.reconciliation import (
    ExchangeMovement,
    ExchangeSide,
    ExchangeSubAccount,
    reconcile,
)
from shared.db import unit_of_work
from shared.errors import ProblemError
from shared.money import parse_fen

log = logging.getLogger(__name__)

SETTLED_STATUSES = ("settled", "reconciled", "breaks")


def exchange_movement(business_date: date, item: dict[str, Any]) -> ExchangeMovement | None:
    """One of custody's cash movements of D keyed by the reference the bank books it under."""
    amount = parse_fen(item["amount"], allow_negative=True)
    if amount == 0:
        return None
    member_id = item["member_id"] or None
    kind = item["kind"]
    if kind == "DEPOSIT" or kind == "WITHDRAWAL":
        reference = item["reference"]
    elif kind == "TRADE_NET" and member_id is not None:
        reference = trade_net_reference(business_date, member_id)
    elif kind == "FEE":
        reference = (
            fee_reference(business_date, member_id)
            if member_id is not None
            else fee_exchange_reference(business_date)
        )
    else:
        return None
    return ExchangeMovement(
        reference=reference,
        account=item["sub_account"],
        member_id=member_id,
        kind=MovementKind(kind),
        direction=Direction.CREDIT if amount > 0 else Direction.DEBIT,
        amount_fen=abs(amount),
    )


async def exchange_side(custody: CustodyClient, business_date: date) -> ExchangeSide:
    accounts = await custody.accounts(business_date)
    subs = tuple(
        ExchangeSubAccount(a["sub_account"], a["member_id"] or None, parse_fen(a["settled"]))
        for a in accounts
    )
    moves = [
        exchange_movement(business_date, m) for m in await custody.cash_movements(business_date)
    ]
    return ExchangeSide(
        sub_accounts=subs,
        total_fen=sum(s.settled_fen for s in subs),
        movements=tuple(m for m in moves if m is not None),
    )


async def load_statement(
    factory: async_sessionmaker[AsyncSession],
    custody: CustodyClient,
    business_date: date,
    content: bytes,
) -> dict[str, Any]:
    async with unit_of_work(factory) as session:
        run = await store.get_run(session, business_date)
    if run is None or run.status not in SETTLED_STATUSES:
        raise ProblemError(
            409,
            "EOD_NOT_SETTLED",
            f"business date {business_date} is not settled yet; reconcile after its EOD run",
        )
    # Custody assembles the exchange side while the statement is parsed (in a thread):
    # the two take about as long as each other for 100,000 sub-accounts.
    side_task = asyncio.create_task(exchange_side(custody, business_date))
    try:
        statement = await asyncio.to_thread(parse_statement, content, business_date)
    except BankFileError as exc:
        side_task.cancel()
        await asyncio.gather(side_task, return_exceptions=True)
        raise ProblemError(
            422,
            "INVALID_STATEMENT",
            str(exc),
            extra={"error": exc.code, "line": exc.line},
        ) from exc
    except BaseException:
        side_task.cancel()
        await asyncio.gather(side_task, return_exceptions=True)
        raise
    try:
        side = await side_task
    except CustodyRefused as exc:
        raise ProblemError(
            502, "CUSTODY_REFUSED", f"custody could not give the exchange side: {exc}"
        ) from exc
    report = reconcile(business_date, side, statement)
    body = report.to_dict()
    broken = {(b.reference, b.account) for b in report.movements.breaks}
    to_complete = sorted(
        m.reference
        for m in side.movements
        if m.kind is MovementKind.WITHDRAWAL and (m.reference, m.account) not in broken
    )
    async with unit_of_work(factory) as session:
        reconciliation_id = (
            await session.execute(
                text(
                    """
                    INSERT INTO clearing.reconciliations (business_date, status, statement, report)
                    VALUES (:d, :s, :statement, CAST(:r AS jsonb)) RETURNING id
                    """
                ),
                {
                    "d": business_date,
                    "s": report.status,
                    "statement": content.decode("utf-8", errors="replace"),
                    "r": orjson.dumps(body).decode(),
                },
            )
        ).scalar_one()
        await session.execute(
            text(
                "UPDATE clearing.eod_runs SET status = :s, updated_at = now() "
                "WHERE business_date = :d AND status IN ('settled', 'reconciled', 'breaks')"
            ),
            {"d": business_date, "s": "reconciled" if report.balanced else "breaks"},
        )
        await store.audit(
            session,
            "reconciliation.loaded",
            business_date,
            {
                "reconciliation_id": reconciliation_id,
                "status": report.status,
                "sub_sub_breaks": len(report.sub_sub.breaks),
                "movement_breaks": len(report.movements.breaks),
            },
        )
    completed: list[str] = []
    for withdrawal_id in to_complete:
        try:
            await custody.complete_withdrawal(withdrawal_id)
            completed.append(withdrawal_id)
        except (CustodyRefused, ProblemError):
            # The report stands; loading the statement again completes what is left.
            log.warning("withdrawal not completed", extra={"withdrawal_id": withdrawal_id})
    return {"reconciliation_id": reconciliation_id, **body, "withdrawals_completed": completed}
