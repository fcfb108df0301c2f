"""`exchange ledger verify`'s checks: the journal's hash chain and every ledger invariant of
the domain (docs/spec/domain.md). Read-only; one repeatable-read snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.custody.domain.journal import GENESIS_HASH, PostingLine, entry_hash

_LIMIT = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def _chain(conn: AsyncConnection) -> Check:
    entries = await conn.execute(
        text(
            "SELECT seq, entry_id, kind, reference, business_date, created_at, prev_hash, hash "
            "FROM custody.entries ORDER BY seq"
        )
    )
    postings = await conn.execute(
        text(
            "SELECT entry_seq, account_id, asset, amount, kind, reference "
            "FROM custody.postings ORDER BY entry_seq, line"
        )
    )
    lines: dict[int, list[PostingLine]] = {}
    for p in postings:
        lines.setdefault(p.entry_seq, []).append(
            PostingLine(p.account_id, p.asset, p.amount, p.kind, p.reference)
        )
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS_HASH, 1
    for e in entries:
        if e.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {e.seq})")
        if e.prev_hash != prev_hash:
            problems.append(f"entry {e.seq} does not link to the previous entry's hash")
        digest = entry_hash(
            e.prev_hash,
            e.seq,
            e.entry_id,
            e.kind,
            e.reference,
            e.business_date,
            e.created_at,
            lines.pop(e.seq, []),
        )
        if digest != e.hash:
            problems.append(f"entry {e.seq} ({e.entry_id}) was altered: its hash does not match")
        prev_hash, expected_seq = e.hash, e.seq + 1
    if lines:
        problems.append(f"postings without an entry: entries {sorted(lines)[:_LIMIT]}")
    head = (await conn.execute(text("SELECT last_seq, last_hash FROM custody.journal_head"))).one()
    if head.last_seq != expected_seq - 1 or head.last_hash != prev_hash:
        problems.append(
            f"the journal head says entry {head.last_seq} is last, the journal ends at "
            f"{expected_seq - 1}: entries were removed or the head altered"
        )
    return Check(
        "hash chain",
        not problems,
        "; ".join(problems[:_LIMIT]) or f"{expected_seq - 1} entries chained",
    )


async def _rows(conn: AsyncConnection, sql: str) -> list[str]:
    return [str(r[0]) for r in (await conn.execute(text(sql))).all()]


async def _check(conn: AsyncConnection, name: str, sql: str, ok_detail: str) -> Check:
    bad = await _rows(conn, sql + f" LIMIT {_LIMIT + 1}")
    if bad:
        return Check(name, False, "; ".join(bad[:_LIMIT]) + (" ..." if len(bad) > _LIMIT else ""))
    return Check(name, True, ok_detail)


CHECKS: list[tuple[str, str, str]] = [
    (
        "balances match postings",
        """
        SELECT 'account ' || a.id || ' (' || a.owner_kind || ' ' || a.owner_id || ' ' || a.asset
               || ') settled ' || a.settled || ' but postings sum to ' || coalesce(p.total, 0)
        FROM custody.accounts a
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM custody.postings
                   GROUP BY account_id) p ON p.account_id = a.id
        WHERE a.settled <> coalesce(p.total, 0)
        """,
        "every account's settled balance is the sum of its postings",
    ),
    (
        "double entry per entry",
        """
        SELECT 'entry ' || entry_seq || ' asset ' || asset || ' sums to ' || sum(amount)
        FROM custody.postings GROUP BY entry_seq, asset HAVING sum(amount) <> 0
        """,
        "every entry balances per asset",
    ),
    (
        "double entry per asset",
        """
        SELECT 'asset ' || asset || ' sums to ' || sum(settled) FROM custody.accounts
        GROUP BY asset HAVING sum(settled) <> 0
        """,
        "every asset sums to zero over all accounts",
    ),
    (
        "no negatives",
        """
        SELECT 'account ' || id || ' (' || owner_kind || ' ' || owner_id || ' ' || asset || ')'
               || ' settled ' || settled || ' held ' || held || ' pending_in ' || pending_in
               || ' pending_out ' || pending_out
        FROM custody.accounts
        WHERE held < 0 OR pending_in < 0 OR pending_out < 0
           OR (owner_kind NOT IN ('bank', 'issuance') AND settled < 0)
        """,
        "no member or system balance is negative",
    ),
    (
        "reservations within balances",
        """
        SELECT 'account ' || id || ' (' || owner_id || ' ' || asset || ') holds ' || held
               || ' + pending_out ' || pending_out || ' > settled ' || settled
        FROM custody.accounts
        WHERE owner_kind NOT IN ('bank', 'issuance') AND held + pending_out > settled
        """,
        "held + pending_out <= settled everywhere (available >= 0)",
    ),
    (
        "held matches reservations",
        """
        SELECT 'account ' || a.id || ' held ' || a.held || ' but open orders and pending '
               || 'withdrawals reserve ' || (coalesce(r.total, 0) + coalesce(w.total, 0))
        FROM custody.accounts a
        LEFT JOIN (SELECT account_id, sum(held) AS total FROM custody.reservations
                   WHERE status = 'open' GROUP BY account_id) r ON r.account_id = a.id
        LEFT JOIN (SELECT account_id, sum(amount_fen) AS total FROM custody.withdrawals
                   WHERE status = 'pending' GROUP BY account_id) w ON w.account_id = a.id
        WHERE a.held <> coalesce(r.total, 0) + coalesce(w.total, 0)
        """,
        "every held amount is an open order's or a pending withdrawal's reservation",
    ),
    (
        "pending matches unsettled trades",
        """
        WITH open_trades AS (
            SELECT t.* FROM custody.trades t
            WHERE NOT EXISTS (SELECT 1 FROM custody.settlement_batches b
                              WHERE b.business_date = t.business_date)
        ), expected AS (
            SELECT 'member' AS k, buyer_member_id AS o, 'CNY' AS asset,
                   0::numeric AS pin, price_fen * quantity + buyer_fee_fen AS pout FROM open_trades
            UNION ALL SELECT 'member', seller_member_id, 'CNY',
                   price_fen * quantity - seller_fee_fen, 0 FROM open_trades
            UNION ALL SELECT 'member', buyer_member_id, instrument, quantity, 0 FROM open_trades
            UNION ALL SELECT 'member', seller_member_id, instrument, 0, quantity FROM open_trades
            UNION ALL SELECT 'fee', '', 'CNY', buyer_fee_fen + seller_fee_fen, 0 FROM open_trades
        ), sums AS (
            SELECT k, o, asset, sum(pin) AS pin, sum(pout) AS pout FROM expected GROUP BY 1, 2, 3
        )
        SELECT 'account ' || a.id || ' (' || a.owner_id || ' ' || a.asset || ') pending '
               || a.pending_in || '/' || a.pending_out || ' but unsettled trades make '
               || coalesce(s.pin, 0) || '/' || coalesce(s.pout, 0)
        FROM custody.accounts a
        LEFT JOIN sums s ON s.k = a.owner_kind AND s.o = a.owner_id AND s.asset = a.asset
        WHERE a.pending_in <> coalesce(s.pin, 0) OR a.pending_out <> coalesce(s.pout, 0)
        """,
        "pending amounts are exactly the unsettled trades' obligations",
    ),
    (
        "units equal issue size",
        """
        SELECT 'product ' || p.code || ' issue ' || p.issue_size || ' but accounts hold '
               || coalesce(sum(a.settled) FILTER (WHERE a.owner_kind <> 'issuance'), 0)
        FROM custody.products p LEFT JOIN custody.accounts a ON a.asset = p.code
        GROUP BY p.code, p.issue_size
        HAVING coalesce(sum(a.settled) FILTER (WHERE a.owner_kind <> 'issuance'), 0)
               <> p.issue_size
        """,
        "every product's units add up to its issue size",
    ),
    (
        "holders within cap",
        """
        SELECT 'product ' || p.code || ' has ' || coalesce(h.n, 0) || ' holders (recorded '
               || p.holder_count || ', cap ' || p.max_holders || ')'
        FROM custody.products p
        LEFT JOIN (SELECT asset, count(*) AS n FROM custody.accounts
                   WHERE owner_kind = 'member' AND (settled > 0 OR pending_in > 0)
                   GROUP BY asset) h ON h.asset = p.code
        WHERE coalesce(h.n, 0) > p.max_holders OR coalesce(h.n, 0) <> p.holder_count
        """,
        "no product has more holders than its cap, and the counts are right",
    ),
]


async def run_checks(engine: AsyncEngine) -> list[Check]:
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        results = [await _chain(conn)]
        for name, sql, ok_detail in CHECKS:
            results.append(await _check(conn, name, sql, ok_detail))
        await conn.rollback()
    return results
