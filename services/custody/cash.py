"""Cash in and out (入金 / 出金): bank deposit notices and withdrawal requests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody import ledger, messages, registry
from services.custody.domain.journal import PostingLine
from services.custody.schemas import DepositCreate, WithdrawalCreate
from shared.clock import utc_now
from shared.errors import ProblemError
from shared.ids import new_id
from shared.money import MoneyError, parse_fen


def _amount(text_value: str) -> int:
    try:
        fen = parse_fen(text_value)
    except MoneyError as exc:
        raise ProblemError(422, exc.code, str(exc)) from exc
    if fen <= 0:
        raise ProblemError(422, "INVALID_AMOUNT", "the amount must be positive")
    return fen


async def deposit(session: AsyncSession, body: DepositCreate) -> tuple[Row[Any], bool]:
    """Credit a bank deposit notice once per bank reference. Returns (deposit, created)."""
    amount = _amount(body.amount)
    member = await registry.member_of_partner(session, body.member_id, None)
    # Serialise notices with the same reference; the loser sees the winner's row.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('deposit:' || :r))"),
        {"r": body.bank_reference},
    )
    existing = (
        await session.execute(
            text("SELECT * FROM custody.deposits WHERE bank_reference = :r"),
            {"r": body.bank_reference},
        )
    ).first()
    if existing is not None:
        if existing.member_id != member.member_id or existing.amount_fen != amount:
            raise ProblemError(
                409,
                "DEPOSIT_REFERENCE_CONFLICT",
                f"bank reference {body.bank_reference} was credited with another member or amount",
            )
        return existing, False
    business_date = await ledger.current_business_date(session)
    cash = await ledger.account_id(session, ("member", member.member_id, "CNY"))
    bank = await ledger.account_id(session, ledger.BANK_ACCOUNT_KEY)
    entry = await ledger.post(
        session,
        kind="DEPOSIT",
        reference=body.bank_reference,
        business_date=business_date,
        postings=[
            PostingLine(bank, "CNY", -amount, "DEPOSIT", body.bank_reference),
            PostingLine(cash, "CNY", amount, "DEPOSIT", body.bank_reference),
        ],
    )
    row = (
        await session.execute(
            text(
                """
                INSERT INTO custody.deposits (deposit_id, bank_reference, member_id, amount_fen,
                    business_date, entry_seq, created_at)
                VALUES (:id, :r, :m, :a, :d, :seq, :now)
                RETURNING *
                """
            ),
            {
                "id": new_id("d"),
                "r": body.bank_reference,
                "m": member.member_id,
                "a": amount,
                "d": business_date,
                "seq": entry.seq,
                "now": entry.created_at,
            },
        )
    ).one()
    return row, True


async def request_withdrawal(
    session: AsyncSession, member_id: str, partner_id: str | None, body: WithdrawalCreate
) -> Row[Any]:
    """Reserve the cash at once; the day's settlement batch posts it."""
    amount = _amount(body.amount)
    member = await registry.member_of_partner(session, member_id, partner_id)
    if body.withdrawal_id is not None:
        existing = await get_withdrawal(session, member.member_id, body.withdrawal_id, None)
        if existing is not None:
            if existing.amount_fen != amount:
                raise ProblemError(
                    409, "WITHDRAWAL_EXISTS", f"{body.withdrawal_id} exists with another amount"
                )
            return existing
    cash = await ledger.account_id(session, ("member", member.member_id, "CNY"))
    if not await ledger.try_hold(session, cash, amount):
        raise ProblemError(422, "INSUFFICIENT_FUNDS", "the amount exceeds the available cash")
    now = utc_now()
    row = (
        await session.execute(
            text(
                """
                INSERT INTO custody.withdrawals (withdrawal_id, member_id, account_id, amount_fen,
                    status, business_date, created_at, updated_at)
                VALUES (:id, :m, :acc, :a, 'pending', :d, :now, :now)
                RETURNING *
                """
            ),
            {
                "id": body.withdrawal_id or new_id("w"),
                "m": member.member_id,
                "acc": cash,
                "a": amount,
                "d": await ledger.current_business_date(session),
                "now": now,
            },
        )
    ).one()
    await messages.withdrawals_updated(session, [row])
    return row


async def get_withdrawal(
    session: AsyncSession, member_id: str | None, withdrawal_id: str, partner_id: str | None
) -> Row[Any] | None:
    row = (
        await session.execute(
            text(
                """
                SELECT w.*, m.partner_id FROM custody.withdrawals w
                JOIN custody.members m USING (member_id)
                WHERE w.withdrawal_id = :w
                """
            ),
            {"w": withdrawal_id},
        )
    ).first()
    if row is None:
        return None
    if member_id is not None and row.member_id != member_id:
        return None
    if partner_id is not None and row.partner_id != partner_id:
        return None
    return row


async def list_withdrawals(session: AsyncSession, member_id: str) -> list[Row[Any]]:
    rows = await session.execute(
        text(
            "SELECT * FROM custody.withdrawals WHERE member_id = :m "
            "ORDER BY created_at DESC, withdrawal_id DESC"
        ),
        {"m": member_id},
    )
    return list(rows.all())


async def complete_withdrawal(session: AsyncSession, withdrawal_id: str) -> Row[Any]:
    """The bank statement shows the withdrawal: sent → completed (a repeat changes nothing)."""
    row = (
        await session.execute(
            text("SELECT * FROM custody.withdrawals WHERE withdrawal_id = :w FOR UPDATE"),
            {"w": withdrawal_id},
        )
    ).first()
    if row is None:
        raise ProblemError(404, "UNKNOWN_WITHDRAWAL", f"no withdrawal {withdrawal_id}")
    if row.status == "completed":
        return row
    if row.status != "sent":
        raise ProblemError(409, "WITHDRAWAL_NOT_SENT", f"{withdrawal_id} is {row.status}, not sent")
    completed = (
        await session.execute(
            text(
                "UPDATE custody.withdrawals SET status = 'completed', updated_at = now() "
                "WHERE withdrawal_id = :w RETURNING *"
            ),
            {"w": withdrawal_id},
        )
    ).one()
    await messages.withdrawals_updated(session, [completed])
    return completed
