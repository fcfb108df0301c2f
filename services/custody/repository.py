"""Reads of the registry and the ledger (every query that is not a movement lives here or
in ledger.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession


async def get_member(session: AsyncSession, member_id: str) -> Row[Any] | None:
    return (
        await session.execute(
            text("SELECT * FROM custody.members WHERE member_id = :m"), {"m": member_id}
        )
    ).first()


async def get_product(
    session: AsyncSession, code: str, *, for_update: bool = False
) -> Row[Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    return (
        await session.execute(
            text(f"SELECT * FROM custody.products WHERE code = :c{lock}"), {"c": code}
        )
    ).first()


async def list_products(session: AsyncSession) -> list[Row[Any]]:
    return list((await session.execute(text("SELECT * FROM custody.products ORDER BY code"))).all())


async def member_accounts(session: AsyncSession, member_id: str) -> list[Row[Any]]:
    rows = await session.execute(
        text(
            "SELECT * FROM custody.accounts WHERE owner_kind = 'member' AND owner_id = :m "
            "ORDER BY asset"
        ),
        {"m": member_id},
    )
    return list(rows.all())


async def member_postings(
    session: AsyncSession, member_id: str, limit: int, before: tuple[int, int] | None
) -> list[Row[Any]]:
    cursor_clause = ""
    params: dict[str, Any] = {"m": member_id, "limit": limit}
    if before is not None:
        cursor_clause = "AND (p.entry_seq, p.line) < (:seq, :line)"
        params.update(seq=before[0], line=before[1])
    rows = await session.execute(
        text(
            f"""
            SELECT p.entry_seq, p.line, e.entry_id, p.asset, p.amount, p.kind, p.reference,
                   p.business_date, p.created_at
            FROM custody.postings p
            JOIN custody.accounts a ON a.id = p.account_id
            JOIN custody.entries e ON e.seq = p.entry_seq
            WHERE a.owner_kind = 'member' AND a.owner_id = :m {cursor_clause}
            ORDER BY p.entry_seq DESC, p.line DESC
            LIMIT :limit
            """
        ),
        params,
    )
    return list(rows.all())


async def holders(session: AsyncSession, code: str) -> list[Row[Any]]:
    rows = await session.execute(
        text(
            """
            SELECT a.owner_id AS member_id, a.settled, a.held, a.pending_in, a.pending_out
            FROM custody.accounts a
            WHERE a.asset = :c AND a.owner_kind = 'member' AND (a.settled > 0 OR a.pending_in > 0)
            ORDER BY a.owner_id
            """
        ),
        {"c": code},
    )
    return list(rows.all())


async def cash_accounts_as_of(session: AsyncSession, as_of: date | None) -> list[Row[Any]]:
    """Every member cash account and the fee income account, with settled as of a date."""
    settled = "a.settled"
    if as_of is not None:
        settled = (
            "(SELECT coalesce(sum(p.amount), 0) FROM custody.postings p "
            "WHERE p.account_id = a.id AND p.business_date <= :as_of)"
        )
    rows = await session.execute(
        text(
            f"""
            SELECT a.owner_kind, m.member_id, m.sub_account, {settled} AS settled,
                   a.settled AS settled_now, a.held, a.pending_out
            FROM custody.accounts a
            LEFT JOIN custody.members m ON a.owner_kind = 'member' AND m.member_id = a.owner_id
            WHERE a.asset = 'CNY' AND a.owner_kind IN ('member', 'fee')
            ORDER BY a.owner_kind DESC, m.sub_account
            """
        ),
        {"as_of": as_of} if as_of is not None else {},
    )
    return list(rows.all())
