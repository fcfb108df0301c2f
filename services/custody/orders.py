"""Orders through custody: pre-trade checks and reservations on the way to a book, and the
book's events turned into settlement obligations and releases on the way back."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody import messages, registry, repository
from services.custody.domain.eligibility import (
    MemberFacts,
    ProductFacts,
    holder_cap_allows,
    order_reject_reason,
)
from services.custody.domain.reservations import required_hold
from shared.clock import utc_now
from shared.contracts import BookCommand, OrderAmend, OrderCancel, OrderSubmit
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule

log = logging.getLogger(__name__)


# --- order.submit: checks and the reservation ------------------------------------------
#
# The holder cap (docs/custody.md, "Orders"): let H be the members holding a product (settled
# or pending-in units) and C the members with an open buy of it. Every order keeps
# |H ∪ C| ≤ max_holders, so however the open buys fill, holders never pass the cap.
#
# Only two things can add a member to H ∪ C: a primary allocation and a buy by a member who
# is neither a holder nor has an open buy (a "new candidate"). Both take the product row
# FOR UPDATE and count under it (an allocation counts holders only, as before: it does not
# reserve room for candidates' open buys). Every other order (sells, buys by members already in H ∪ C)
# takes the product row FOR KEY SHARE only, so such orders of one product run in parallel,
# while FOR UPDATE waits for all of them and they for it. A fast-path buy re-checks that its
# member is in H ∪ C in a statement that starts after its KEY SHARE lock is granted (READ
# COMMITTED: a fresh snapshot), so every new-candidate count that finished before that lock
# is visible to the re-check, and no new-candidate count can run until the buy commits, by
# which time its own open reservation keeps the member in C. If the re-check fails (the
# member's last open buy closed or its units settled away in between), the buy is counted
# like a new candidate while still holding KEY SHARE (so no FOR UPDATE count can overlap),
# serialised with other such fallbacks of the product by a transaction advisory lock (never
# an upgrade to FOR UPDATE: two upgrades would deadlock). State changes (`control`) take the
# row FOR UPDATE too, so an order's state check is still decided in turn with them.

_ORDER_FACTS = text(
    """
    WITH facts AS MATERIALIZED (
        SELECT
            EXISTS (SELECT 1 FROM custody.reservations WHERE order_id = :o) AS seen,
            (SELECT a.id FROM custody.accounts a
             WHERE a.owner_kind = 'member' AND a.owner_id = :m AND a.asset = :asset) AS account_id,
            CAST(:side AS text) = 'SELL' OR EXISTS (
                SELECT 1 FROM custody.accounts
                WHERE owner_kind = 'member' AND owner_id = :m AND asset = :c
                  AND (settled > 0 OR pending_in > 0)
            ) OR EXISTS (
                SELECT 1 FROM custody.reservations
                WHERE member_id = :m AND instrument = :c AND side = 'BUY' AND status = 'open'
            ) AS shared_lock
    ),
    p_shared AS MATERIALIZED (
        SELECT code, state, transferable, risk_level, holder_count, max_holders
        FROM custody.products WHERE code = :c AND (SELECT shared_lock FROM facts)
        FOR KEY SHARE
    ),
    p_exclusive AS MATERIALIZED (
        SELECT code, state, transferable, risk_level, holder_count, max_holders
        FROM custody.products WHERE code = :c AND NOT (SELECT shared_lock FROM facts)
        FOR UPDATE
    ),
    p AS (SELECT * FROM p_shared UNION ALL SELECT * FROM p_exclusive)
    SELECT f.seen, f.account_id, f.shared_lock,
           m.partner_id, m.qualified, m.risk_tolerance,
           p.code, p.state, p.transferable, p.risk_level, p.holder_count, p.max_holders
    FROM facts f
    LEFT JOIN custody.members m ON m.member_id = :m
    LEFT JOIN p ON true
    """
)

_NEW_HOLDER_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('custody:new-holder:' || :c))")

#: Holders (the recorded count, kept in the same transactions as the accounts) plus
#: candidates: members with an open buy who hold nothing yet. One statement, one snapshot.
_POSSIBLE_HOLDERS = text(
    """
    SELECT p.holder_count + (
        SELECT count(DISTINCT r.member_id) FROM custody.reservations r
        LEFT JOIN custody.accounts a
          ON a.owner_kind = 'member' AND a.owner_id = r.member_id AND a.asset = r.instrument
        WHERE r.instrument = :c AND r.side = 'BUY' AND r.status = 'open'
          AND NOT coalesce(a.settled > 0 OR a.pending_in > 0, false)
    )
    FROM custody.products p WHERE p.code = :c
    """
)

#: The reservation in one statement: (for a fast-path buy) the member is still a holder or
#: candidate, the conditional hold (never below zero available), and the reservation row.
_RESERVE = text(
    """
    WITH w AS MATERIALIZED (
        SELECT NOT CAST(:need_witness AS boolean) OR EXISTS (
            SELECT 1 FROM custody.accounts
            WHERE owner_kind = 'member' AND owner_id = :m AND asset = :c
              AND (settled > 0 OR pending_in > 0)
        ) OR EXISTS (
            SELECT 1 FROM custody.reservations
            WHERE member_id = :m AND instrument = :c AND side = 'BUY' AND status = 'open'
        ) AS ok
    ),
    h AS (
        UPDATE custody.accounts SET held = held + :held
        WHERE id = :account AND settled - held - pending_out >= :held AND (SELECT ok FROM w)
        RETURNING id
    ),
    ins AS (
        INSERT INTO custody.reservations (order_id, member_id, instrument, side, price_fen,
            quantity, remaining, fees_charged, held, account_id, status, created_at)
        SELECT :o, :m, :c, :side, :price, :q, :q, 0, :held, h.id, 'open', :now FROM h
        RETURNING order_id
    )
    SELECT (SELECT ok FROM w) AS counted, EXISTS (SELECT 1 FROM ins) AS reserved
    """
)


async def _new_candidate_allowed(session: AsyncSession, code: str, max_holders: int) -> bool:
    """May one more possible holder be added? Called holding the product FOR UPDATE, or
    holding it FOR KEY SHARE and the product's new-holder advisory lock (the fallback of a
    fast-path buy whose member left H ∪ C): either way no other count for the product can
    run until this transaction ends, and this statement's snapshot follows the lock."""
    possible = (await session.execute(_POSSIBLE_HOLDERS, {"c": code})).scalar_one()
    return holder_cap_allows(False, int(possible), max_holders)


async def submit(
    session: AsyncSession,
    order: OrderSubmit,
    shards: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> str | None:
    """Check and reserve; forward to the shard or emit ``order.rejected``.

    Returns the reject reason, or None when the order went on to its book. Two statements
    on the common path (facts + product lock, then the reservation), plus the outbox.
    """
    order_id = order["order_id"]
    code = order["instrument"]
    side = order["side"]
    member_id = order["member_id"]
    price, quantity = order["price_fen"], order["quantity"]
    facts = (
        await session.execute(
            _ORDER_FACTS,
            {
                "o": order_id,
                "m": member_id,
                "c": code,
                "side": side,
                "asset": "CNY" if side == "BUY" else code,
            },
        )
    ).one()
    if facts.seen:  # the same order submitted again under another message id
        return None
    reason = order_reject_reason(
        side,
        order["partner_id"],
        None
        if facts.partner_id is None
        else MemberFacts(facts.partner_id, facts.qualified, facts.risk_tolerance),
        None
        if facts.code is None
        else ProductFacts(facts.state, facts.transferable, facts.risk_level),
    )
    if reason is None and (price <= 0 or quantity <= 0):
        reason = "INVALID_ORDER"
    exclusive = not facts.shared_lock  # a buy by a possible new holder
    if (
        reason is None
        and exclusive
        and not await _new_candidate_allowed(session, code, facts.max_holders)
    ):
        reason = "HOLDER_LIMIT_REACHED"
    if reason is None and facts.account_id is None:
        # no account: nothing to reserve from (price and quantity are positive)
        reason = "INSUFFICIENT_FUNDS" if side == "BUY" else "INSUFFICIENT_UNITS"
    if reason is None:
        held = required_hold(side, price, quantity, 0, schedule)
        params = {
            "o": order_id,
            "m": member_id,
            "c": code,
            "side": side,
            "price": price,
            "q": quantity,
            "held": held,
            "account": facts.account_id,
            "now": utc_now(),
            "need_witness": side == "BUY" and not exclusive,
        }
        outcome = (await session.execute(_RESERVE, params)).one()
        if not outcome.counted:
            # The member left H ∪ C between the facts and the lock: count it as new. Not by
            # taking FOR UPDATE over our KEY SHARE (two such upgrades deadlock): new-holder
            # counts under KEY SHARE are serialised by an advisory lock instead, and no
            # FOR UPDATE count can run while we hold KEY SHARE.
            await session.execute(_NEW_HOLDER_LOCK, {"c": code})
            if not await _new_candidate_allowed(session, code, facts.max_holders):
                reason = "HOLDER_LIMIT_REACHED"
            else:
                outcome = (await session.execute(_RESERVE, {**params, "need_witness": False})).one()
        if reason is None and not outcome.reserved:
            reason = "INSUFFICIENT_FUNDS" if side == "BUY" else "INSUFFICIENT_UNITS"
    if reason is not None:
        await messages.order_rejected(session, order_id, member_id, code, reason)
        return reason
    await messages.to_shard(
        session,
        BookCommand(
            command="new",
            instrument=code,
            order_id=order_id,
            member_id=member_id,
            side=side,
            price_fen=price,
            quantity=quantity,
            tif=order["time_in_force"],
        ),
        shards,
    )
    return None


async def cancel(session: AsyncSession, command: OrderCancel, shards: int) -> None:
    await messages.to_shard(
        session,
        BookCommand(
            command="cancel", instrument=command["instrument"], order_id=command["order_id"]
        ),
        shards,
    )


async def amend(session: AsyncSession, command: OrderAmend, shards: int) -> None:
    await messages.to_shard(
        session,
        BookCommand(
            command="amend",
            instrument=command["instrument"],
            order_id=command["order_id"],
            quantity=command["quantity"],
        ),
        shards,
    )


_CONTROL_STATE = {"halt": "halted", "resume": "trading", "delist": "delisted"}


async def control(session: AsyncSession, code: str, action: str, shards: int) -> None:
    """Halt, resume or delist: the registry's state now, and the book's in sequence."""
    product = await repository.get_product(session, code, for_update=True)
    if product is None or action not in _CONTROL_STATE:
        log.warning("instrument control ignored", extra={"instrument": code, "action": action})
        return
    if product.state == "delisted":
        return  # final
    if await registry.set_state(session, code, _CONTROL_STATE[action]):
        await messages.instrument_updated(session, [code])
    await messages.to_shard(session, BookCommand(command=action, instrument=code), shards)  # type: ignore[typeddict-item]


# --- lock order across a batch -------------------------------------------------------------
#
# The inbox applies a batch of messages in one transaction, so a batch of reservations
# (commands) and a batch of fills and releases (book events) each hold many account rows
# until they commit. Taken message by message, they would take them in message order and
# could deadlock with each other; each batch therefore locks every account it may touch
# first, in ascending id order (the ledger's lock order), before its first message.

_LOCK_SUBMIT_ACCOUNTS = text(
    """
    SELECT a.id FROM custody.accounts a
    JOIN unnest(CAST(:members AS text[]), CAST(:assets AS text[])) AS k(member_id, asset)
      ON a.owner_kind = 'member' AND a.owner_id = k.member_id AND a.asset = k.asset
    ORDER BY a.id
    FOR NO KEY UPDATE OF a
    """
)


async def lock_accounts_of_submits(session: AsyncSession, submits: list[OrderSubmit]) -> None:
    """Lock the accounts a batch of ``order.submit`` will hold from, in id order."""
    keys = sorted(
        {(o["member_id"], "CNY" if o["side"] == "BUY" else o["instrument"]) for o in submits}
    )
    if keys:
        await session.execute(
            _LOCK_SUBMIT_ACCOUNTS,
            {"members": [k[0] for k in keys], "assets": [k[1] for k in keys]},
        )
