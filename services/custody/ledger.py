"""The double-entry ledger on PostgreSQL: accounts, balance movements and the hash-chained
journal.

Locking discipline (so that nothing deadlocks): a transaction that posts takes the journal
head first, then the accounts it touches in ascending id order. Reservations and fills take
only account rows, also in ascending id order. Every movement is a conditional update or is
backed by the table's CHECK constraints, so no balance or availability can go negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody.domain.journal import PostingLine, entry_hash, unbalanced_assets
from services.custody.domain.settlement import AccountKey, Delta
from shared.clock import utc_now
from shared.driver import Tx
from shared.ids import new_id
from shared.sql import Statement

BANK_ACCOUNT_KEY: AccountKey = ("bank", "", "CNY")
FEE_ACCOUNT_KEY: AccountKey = ("fee", "", "CNY")


#: Entries with more lines than this are written with COPY (and their account movements
#: go through a temporary table) rather than as statement parameters.
BULK_THRESHOLD = 1000


class LedgerError(RuntimeError):
    """A movement the ledger refuses (unbalanced entry, unknown account)."""


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The session's asyncpg connection, inside the session's transaction (for COPY)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    return driver


async def current_business_date(session: AsyncSession) -> date:
    value = (
        await session.execute(text("SELECT business_date FROM custody.business_day WHERE id = 1"))
    ).scalar_one()
    assert isinstance(value, date)
    return value


async def set_business_date(session: AsyncSession, business_date: date) -> None:
    await session.execute(
        text(
            "UPDATE custody.business_day SET business_date = greatest(business_date, :d), "
            "updated_at = now() WHERE id = 1"
        ),
        {"d": business_date},
    )


_CREATE_ACCOUNTS = Statement(
    """
    INSERT INTO custody.accounts (owner_kind, owner_id, asset)
    SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:owners AS text[]),
                         CAST(:assets AS text[]))
    ORDER BY 1, 2, 3
    ON CONFLICT (owner_kind, owner_id, asset) DO NOTHING
    """
)
_ACCOUNT_IDS = Statement(
    """
    SELECT a.id, a.owner_kind, a.owner_id, a.asset
    FROM custody.accounts a
    JOIN unnest(CAST(:kinds AS text[]), CAST(:owners AS text[]), CAST(:assets AS text[]))
         AS k(kind, owner, asset)
      ON a.owner_kind = k.kind AND a.owner_id = k.owner AND a.asset = k.asset
    """
)


async def ensure_accounts(session: Tx, keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """The ids of accounts (created empty when missing)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    kinds = [k[0] for k in wanted]
    owners = [k[1] for k in wanted]
    assets = [k[2] for k in wanted]
    # Accounts are never deleted, so ids found are final; almost always all of them are
    # there, and the insert is skipped (a round trip, and its index probes, saved).
    found = await _account_ids(session, kinds, owners, assets)
    if len(found) == len(wanted):
        return found
    await _CREATE_ACCOUNTS.execute(session, kinds=kinds, owners=owners, assets=assets)
    # A statement after the insert, so a fresh snapshot: it sees an account another
    # transaction created (and committed) while this one's insert waited on it.
    found = await _account_ids(session, kinds, owners, assets)
    if len(found) != len(wanted):
        raise LedgerError("could not resolve every account")
    return found


async def _account_ids(
    session: Tx, kinds: list[str], owners: list[str], assets: list[str]
) -> dict[AccountKey, int]:
    rows = await _ACCOUNT_IDS.fetch(session, kinds=kinds, owners=owners, assets=assets)
    return {(r["owner_kind"], r["owner_id"], r["asset"]): int(r["id"]) for r in rows}


async def account_id(session: AsyncSession, key: AccountKey) -> int:
    return (await ensure_accounts(session, [key]))[key]


async def find_account(session: AsyncSession, key: AccountKey) -> int | None:
    value = (
        await session.execute(
            text(
                "SELECT id FROM custody.accounts WHERE owner_kind = :k AND owner_id = :o "
                "AND asset = :a"
            ),
            {"k": key[0], "o": key[1], "a": key[2]},
        )
    ).scalar_one_or_none()
    return None if value is None else int(value)


async def lock_accounts(session: AsyncSession, ids: Iterable[int]) -> None:
    """Row locks on accounts in ascending id order (the global lock order)."""
    await session.execute(
        text(
            "SELECT id FROM custody.accounts WHERE id = ANY(CAST(:ids AS bigint[])) "
            "ORDER BY id FOR UPDATE"
        ),
        {"ids": sorted(set(ids))},
    )


_APPLY_DELTAS = Statement(
    """
    UPDATE custody.accounts a SET
        settled = a.settled + v.ds, held = a.held + v.dh,
        pending_in = a.pending_in + v.di, pending_out = a.pending_out + v.dout
    FROM unnest(CAST(:ids AS bigint[]), CAST(:ds AS bigint[]), CAST(:dh AS bigint[]),
                CAST(:di AS bigint[]), CAST(:dout AS bigint[])) AS v(id, ds, dh, di, dout)
    WHERE a.id = v.id
    """
)


async def apply_deltas(session: Tx, deltas: Mapping[int, Delta]) -> None:
    """Add deltas to accounts in one statement (the caller holds their locks, or accepts the
    CHECK constraints as the guard)."""
    items = sorted(
        (i, d) for i, d in deltas.items() if d.settled or d.held or d.pending_in or d.pending_out
    )
    if not items:
        return
    await _APPLY_DELTAS.execute(
        session,
        ids=[i for i, _ in items],
        ds=[d.settled for _, d in items],
        dh=[d.held for _, d in items],
        di=[d.pending_in for _, d in items],
        dout=[d.pending_out for _, d in items],
    )


async def apply_deltas_bulk(session: AsyncSession, deltas: Mapping[int, Delta]) -> None:
    """:func:`lock_accounts` and :func:`apply_deltas` for many accounts: the movements are
    copied into a temporary table, the rows locked in ascending id order, then updated in
    one statement from the table."""
    items = [
        (i, d.settled, d.held, d.pending_in, d.pending_out)
        for i, d in sorted(deltas.items())
        if d.settled or d.held or d.pending_in or d.pending_out
    ]
    if not items:
        return
    await session.execute(
        text(
            """
            CREATE TEMP TABLE IF NOT EXISTS ledger_movements (
                id bigint PRIMARY KEY, ds bigint, dh bigint, di bigint, dout bigint
            ) ON COMMIT DELETE ROWS
            """
        )
    )
    await session.execute(text("TRUNCATE ledger_movements"))
    driver = await driver_connection(session)
    await driver.copy_records_to_table(
        "ledger_movements", records=items, columns=["id", "ds", "dh", "di", "dout"]
    )
    await session.execute(text("ANALYZE ledger_movements"))
    await session.execute(
        text(
            """
            SELECT a.id FROM custody.accounts a JOIN ledger_movements v ON v.id = a.id
            ORDER BY a.id FOR UPDATE OF a
            """
        )
    )
    await session.execute(
        text(
            """
            UPDATE custody.accounts a SET
                settled = a.settled + v.ds, held = a.held + v.dh,
                pending_in = a.pending_in + v.di, pending_out = a.pending_out + v.dout
            FROM ledger_movements v
            WHERE a.id = v.id
            """
        )
    )


async def try_hold(session: AsyncSession, account: int, amount: int) -> bool:
    """Reserve ``amount`` if it is available (settled − held − pending_out); atomically."""
    row = (
        await session.execute(
            text(
                """
                UPDATE custody.accounts SET held = held + :amount
                WHERE id = :id AND settled - held - pending_out >= :amount
                RETURNING id
                """
            ),
            {"id": account, "amount": amount},
        )
    ).first()
    return row is not None


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    entry_id: str
    hash: str
    created_at: datetime


async def post(
    session: AsyncSession,
    *,
    kind: str,
    reference: str,
    business_date: date,
    postings: Sequence[PostingLine],
    extra: Mapping[int, Delta] | None = None,
) -> Entry:
    """Append one balanced entry to the journal and move the accounts it touches.

    ``settled`` changes by exactly the postings; ``extra`` adds held and pending movements
    to the same accounts in the same statement. Takes the journal head lock, then the
    account locks in ascending id order.
    """
    if not postings:
        raise LedgerError("an entry needs postings")
    unbalanced = unbalanced_assets(postings)
    if unbalanced:
        raise LedgerError(f"entry {kind}/{reference} is unbalanced: {unbalanced}")
    head = (
        await session.execute(
            text("SELECT last_seq, last_hash FROM custody.journal_head WHERE id = 1 FOR UPDATE")
        )
    ).one()
    deltas: dict[int, Delta] = {}
    for account, d in (extra or {}).items():
        deltas[account] = Delta(d.settled, d.held, d.pending_in, d.pending_out)
    for p in postings:
        deltas.setdefault(p.account_id, Delta()).settled += p.amount
    if len(deltas) > BULK_THRESHOLD:
        await apply_deltas_bulk(session, deltas)
    else:
        await lock_accounts(session, deltas)
        await apply_deltas(session, deltas)
    seq = int(head.last_seq) + 1
    entry_id = new_id("e")
    created_at = utc_now()
    digest = entry_hash(
        head.last_hash, seq, entry_id, kind, reference, business_date, created_at, postings
    )
    await session.execute(
        text(
            """
            INSERT INTO custody.entries
                (seq, entry_id, kind, reference, business_date, created_at, prev_hash, hash)
            VALUES (:seq, :entry_id, :kind, :reference, :business_date, :created_at, :prev, :hash)
            """
        ),
        {
            "seq": seq,
            "entry_id": entry_id,
            "kind": kind,
            "reference": reference,
            "business_date": business_date,
            "created_at": created_at,
            "prev": head.last_hash,
            "hash": digest,
        },
    )
    if len(postings) > BULK_THRESHOLD:
        driver = await driver_connection(session)
        await driver.copy_records_to_table(
            "postings",
            schema_name="custody",
            columns=[
                "entry_seq",
                "line",
                "account_id",
                "asset",
                "amount",
                "kind",
                "reference",
                "business_date",
                "created_at",
            ],
            records=[
                (
                    seq,
                    line,
                    p.account_id,
                    p.asset,
                    p.amount,
                    p.kind,
                    p.reference,
                    business_date,
                    created_at,
                )
                for line, p in enumerate(postings)
            ],
        )
    else:
        await _insert_postings(session, seq, business_date, created_at, postings)
    await session.execute(
        text("UPDATE custody.journal_head SET last_seq = :seq, last_hash = :hash WHERE id = 1"),
        {"seq": seq, "hash": digest},
    )
    return Entry(seq, entry_id, digest, created_at)


async def _insert_postings(
    session: AsyncSession,
    seq: int,
    business_date: date,
    created_at: datetime,
    postings: Sequence[PostingLine],
) -> None:
    await session.execute(
        text(
            """
            INSERT INTO custody.postings
                (entry_seq, line, account_id, asset, amount, kind, reference, business_date,
                 created_at)
            SELECT :seq, v.line - 1, v.account_id, v.asset, v.amount, v.kind, v.reference,
                   :business_date, :created_at
            FROM unnest(CAST(:accounts AS bigint[]), CAST(:assets AS text[]),
                        CAST(:amounts AS bigint[]), CAST(:kinds AS text[]),
                        CAST(:refs AS text[])) WITH ORDINALITY
                 AS v(account_id, asset, amount, kind, reference, line)
            """
        ),
        {
            "seq": seq,
            "business_date": business_date,
            "created_at": created_at,
            "accounts": [p.account_id for p in postings],
            "assets": [p.asset for p in postings],
            "amounts": [p.amount for p in postings],
            "kinds": [p.kind for p in postings],
            "refs": [p.reference for p in postings],
        },
    )


_REFRESH_HOLDER_COUNTS = Statement(
    """
    UPDATE custody.products p SET holder_count = c.n, updated_at = now()
    FROM (
        SELECT code, (
            SELECT count(*) FROM custody.accounts a
            WHERE a.asset = code AND a.owner_kind = 'member'
              AND (a.settled > 0 OR a.pending_in > 0)
        ) AS n
        FROM unnest(CAST(:codes AS text[])) AS code
    ) c
    WHERE p.code = c.code AND p.holder_count <> c.n
    RETURNING p.code
    """
)


async def refresh_holder_counts(session: Tx, codes: Iterable[str]) -> list[str]:
    """Recount the holders of products; returns the codes whose count changed."""
    wanted = sorted(set(codes))
    if not wanted:
        return []
    rows = await _REFRESH_HOLDER_COUNTS.fetch(session, codes=wanted)
    return [r["code"] for r in rows]
