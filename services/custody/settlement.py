"""The settlement batch (交割结算): a whole business day posted in one transaction.

All or nothing (one database transaction), idempotent by ``batch_id`` (the stored result is
returned again), one batch per business date, and checked against custody's own
obligations for that date before anything moves.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody import ledger, messages
from services.custody.domain.journal import PostingLine
from services.custody.domain.settlement import (
    AccountKey,
    Delta,
    SettlementTrade,
    SettlementWithdrawal,
    compare,
    net,
)
from services.custody.schemas import SettlementBatchRequest
from services.custody.settings import CustodySettings
from shared.clock import utc_now
from shared.errors import ProblemError
from shared.faults import crash_point
from shared.money import format_fen

_SAMPLE = 20


def request_hash(body: SettlementBatchRequest) -> str:
    canonical = {
        "batch_id": body.batch_id,
        "business_date": body.business_date.isoformat(),
        "trades": sorted(
            (
                t.trade_id,
                t.instrument,
                t.price_fen,
                t.quantity,
                t.buyer_member_id,
                t.seller_member_id,
                t.buyer_fee_fen,
                t.seller_fee_fen,
            )
            for t in body.trades
        ),
        "withdrawal_ids": None if body.withdrawal_ids is None else sorted(body.withdrawal_ids),
    }
    return hashlib.sha256(orjson.dumps(canonical)).hexdigest()


async def get_batch(session: AsyncSession, batch_id: str) -> dict[str, Any] | None:
    value = (
        await session.execute(
            text("SELECT result FROM custody.settlement_batches WHERE batch_id = :b"),
            {"b": batch_id},
        )
    ).scalar_one_or_none()
    return None if value is None else dict(value)


async def _obligations(session: AsyncSession, business_date: date) -> dict[str, SettlementTrade]:
    result = await session.execute(
        text(
            """
            SELECT trade_id, instrument, price_fen, quantity, buyer_member_id, seller_member_id,
                   buyer_fee_fen, seller_fee_fen
            FROM custody.trades WHERE business_date = :d
            """
        ),
        {"d": business_date},
    )
    return {row[0]: SettlementTrade(*row) for row in result}


async def apply_batch(
    session: AsyncSession, body: SettlementBatchRequest, settings: CustodySettings
) -> tuple[dict[str, Any], bool]:
    """Apply a day's settlement; returns (result, applied now). A repeat returns the
    stored result and changes nothing."""
    digest = request_hash(body)
    # One batch at a time: the second of two concurrent identical requests sees the first.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('custody:settlement'))"))
    stored = (
        await session.execute(
            text(
                "SELECT batch_id, business_date, request_hash, result "
                "FROM custody.settlement_batches WHERE batch_id = :b OR business_date = :d"
            ),
            {"b": body.batch_id, "d": body.business_date},
        )
    ).all()
    for row in stored:
        if row.batch_id == body.batch_id and row.request_hash == digest:
            return dict(row.result), False
        if row.batch_id == body.batch_id:
            raise ProblemError(
                409, "BATCH_ID_REUSED", f"batch {body.batch_id} was applied with other content"
            )
        raise ProblemError(
            409,
            "ALREADY_SETTLED",
            f"{body.business_date} was settled by batch {row.batch_id}",
            extra={"batch_id": row.batch_id},
        )
    today = await ledger.current_business_date(session)
    if body.business_date >= today:
        raise ProblemError(
            409,
            "BUSINESS_DATE_OPEN",
            f"{body.business_date} is not closed yet (the business date is {today})",
        )
    batch = [
        SettlementTrade(
            t.trade_id,
            t.instrument,
            t.price_fen,
            t.quantity,
            t.buyer_member_id,
            t.seller_member_id,
            t.buyer_fee_fen,
            t.seller_fee_fen,
        )
        for t in body.trades
    ]
    obligations = await _obligations(session, body.business_date)
    mismatch = compare(batch, obligations)
    if not mismatch.empty:
        raise ProblemError(
            409,
            "SETTLEMENT_MISMATCH",
            f"the batch does not match custody's obligations for {body.business_date}: "
            f"{len(mismatch.missing_from_batch)} missing, {len(mismatch.unknown_to_custody)} "
            f"unknown, {len(mismatch.different)} different",
            extra={
                "missing_from_batch": mismatch.missing_from_batch[:_SAMPLE],
                "unknown_to_custody": mismatch.unknown_to_custody[:_SAMPLE],
                "different": mismatch.different[:_SAMPLE],
            },
        )
    pending = (
        await session.execute(
            text(
                """
                SELECT withdrawal_id, member_id, amount_fen FROM custody.withdrawals
                WHERE status = 'pending' AND business_date <= :d
                ORDER BY withdrawal_id FOR UPDATE
                """
            ),
            {"d": body.business_date},
        )
    ).all()
    withdrawals = [SettlementWithdrawal(*row) for row in pending]
    if body.withdrawal_ids is not None and sorted(body.withdrawal_ids) != [
        w.withdrawal_id for w in withdrawals
    ]:
        raise ProblemError(
            409,
            "SETTLEMENT_MISMATCH",
            "the batch's withdrawals differ from the pending withdrawals of the date",
            extra={
                "expected_withdrawal_ids": [w.withdrawal_id for w in withdrawals][:_SAMPLE],
            },
        )
    netting = net(batch, withdrawals, body.batch_id)
    ids = await ledger.ensure_accounts(session, netting.deltas.keys())
    postings = [
        PostingLine(ids[p.account], p.account[2], p.amount, p.kind, p.reference)
        for p in netting.postings
    ]
    extra: dict[int, Delta] = {
        ids[key]: Delta(0, d.held, d.pending_in, d.pending_out) for key, d in netting.deltas.items()
    }
    _check_settled_matches(netting.deltas, postings, ids)
    entry_id: str | None = None
    entry_seq: int | None = None
    if postings:
        entry = await ledger.post(
            session,
            kind="SETTLEMENT",
            reference=body.batch_id,
            business_date=body.business_date,
            postings=postings,
            extra=extra,
        )
        entry_id, entry_seq = entry.entry_id, entry.seq
    crash_point("settlement_mid_batch")
    if withdrawals:
        await session.execute(
            text(
                """
                UPDATE custody.withdrawals SET status = 'sent', batch_id = :b, updated_at = now()
                WHERE withdrawal_id = ANY(CAST(:ids AS text[]))
                """
            ),
            {"b": body.batch_id, "ids": [w.withdrawal_id for w in withdrawals]},
        )
    products = sorted({t.instrument for t in batch})
    changed = await ledger.refresh_holder_counts(session, products)
    if changed:
        await messages.instrument_updated(session, changed)
    result = await _result(session, body, netting, withdrawals, entry_id, settings)
    await session.execute(
        text(
            """
            INSERT INTO custody.settlement_batches
                (batch_id, business_date, request_hash, entry_seq, result, created_at)
            VALUES (:b, :d, :h, :seq, CAST(:result AS jsonb), :now)
            """
        ),
        {
            "b": body.batch_id,
            "d": body.business_date,
            "h": digest,
            "seq": entry_seq,
            "result": orjson.dumps(result).decode(),
            "now": utc_now(),
        },
    )
    crash_point("settlement_before_commit")
    return result, True


def _check_settled_matches(
    deltas: dict[AccountKey, Delta], postings: list[PostingLine], ids: dict[AccountKey, int]
) -> None:
    by_account: dict[int, int] = {}
    for p in postings:
        by_account[p.account_id] = by_account.get(p.account_id, 0) + p.amount
    for key, d in deltas.items():
        if by_account.get(ids[key], 0) != d.settled:
            raise ledger.LedgerError(f"settlement postings disagree with the netting for {key}")


async def _result(
    session: AsyncSession,
    body: SettlementBatchRequest,
    netting: Any,
    withdrawals: list[SettlementWithdrawal],
    entry_id: str | None,
    settings: CustodySettings,
) -> dict[str, Any]:
    member_ids = sorted(netting.members)
    subs = {
        r.member_id: r.sub_account
        for r in await session.execute(
            text(
                "SELECT member_id, sub_account FROM custody.members "
                "WHERE member_id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": member_ids},
        )
    }
    members = []
    for member_id in member_ids:
        m = netting.members[member_id]
        members.append(
            {
                "member_id": member_id,
                "sub_account": subs.get(member_id),
                "net_cash": format_fen(m.net_cash_fen),
                "fees": format_fen(m.fees_fen),
                "net_after_fees": format_fen(m.net_cash_fen - m.fees_fen),
                "withdrawals": format_fen(m.withdrawals_fen),
                "units": [
                    {"instrument": code, "net_units": units}
                    for code, units in sorted(m.units.items())
                ],
            }
        )
    return {
        "batch_id": body.batch_id,
        "business_date": body.business_date.isoformat(),
        "status": "applied",
        "entry_id": entry_id,
        "trade_count": netting.trade_count,
        "members": members,
        "withdrawals": [
            {
                "withdrawal_id": w.withdrawal_id,
                "member_id": w.member_id,
                "sub_account": subs.get(w.member_id),
                "amount": format_fen(w.amount_fen),
            }
            for w in withdrawals
        ],
        "fee_account": {
            "sub_account": settings.fee_sub_account,
            "credit": format_fen(netting.fee_total_fen),
        },
        "totals": {
            "gross_amount": format_fen(netting.gross_amount_fen),
            "fee_total": format_fen(netting.fee_total_fen),
            "withdrawal_total": format_fen(netting.withdrawal_total_fen),
            "member_count": len(members),
            "posting_count": len(netting.postings),
        },
    }
