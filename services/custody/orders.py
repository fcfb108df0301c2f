"""Orders through custody: pre-trade checks and reservations on the way to a book, and the
book's events turned into settlement obligations and releases on the way back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
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
from shared.db import transaction_info
from shared.driver import Tx
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule
from shared.logging import correlation_id_var
from shared.sql import Statement

log = logging.getLogger(__name__)


# --- order.submit: checks and the reservation ------------------------------------------
#
# The holder cap (docs/custody.md, "Orders"): let H be the members holding a product (settled
# or pending-in units) and C the members with an open buy of it. Every order keeps
# |H ∪ C| ≤ max_holders, so however the open buys fill, holders never pass the cap.
#
# Only two things can add a member to H ∪ C: a primary allocation and a buy by a member who
# is neither a holder nor has an open buy (a "new candidate"); both hold the product row
# FOR UPDATE while they count and until they commit. Orders are decided a batch at a time:
# the batch takes the rows of its products FOR UPDATE (code order, after its accounts), then
# counts |H ∪ C| per product and reads which of its buyers are already in it, in statements
# that start after the locks are granted (READ COMMITTED: fresh snapshots). While the batch
# holds the rows nothing can add a member to H ∪ C of its products (members can only leave
# it, by a last open buy closing or units settling away, which can only lower the count), so
# deciding the batch's orders in order in memory, each accepted new candidate adding one,
# keeps the cap at commit. The accounts the batch reserves from are locked by the consumer
# before the batch (``lock_accounts_of_submits``), so their balances read here are the ones
# the holds are added to.

_LOCK_PRODUCTS = Statement(
    """
    SELECT code, state, transferable, risk_level, max_holders FROM custody.products
    WHERE code = ANY(CAST(:codes AS text[])) ORDER BY code FOR UPDATE
    """
)

#: Everything a batch is decided on, read in one statement after its locks are granted:
#: per (member, product) the member's cash and units accounts with what is available on
#: each, and whether the member is in H ∪ C of the product (a holder, or a candidate: an
#: open buy); the members; the orders reserved before.
_BATCH_FACTS = Statement(
    """
    WITH fact_rows AS (
        SELECT k.member_id, k.code,
               cash.id AS cash_id, cash.settled - cash.held - cash.pending_out AS cash_available,
               units.id AS units_id,
               units.settled - units.held - units.pending_out AS units_available,
               coalesce(units.settled > 0 OR units.pending_in > 0, false) OR EXISTS (
                   SELECT 1 FROM custody.reservations r
                   WHERE r.member_id = k.member_id AND r.instrument = k.code AND r.side = 'BUY'
                     AND r.status = 'open'
               ) AS in_holders_or_candidates
        FROM unnest(CAST(:pair_members AS text[]), CAST(:pair_codes AS text[]))
             AS k(member_id, code)
        LEFT JOIN custody.accounts cash
          ON cash.owner_kind = 'member' AND cash.owner_id = k.member_id AND cash.asset = 'CNY'
        LEFT JOIN custody.accounts units
          ON units.owner_kind = 'member' AND units.owner_id = k.member_id
         AND units.asset = k.code
    ), member_rows AS (
        SELECT member_id, partner_id, qualified, risk_tolerance FROM custody.members
        WHERE member_id = ANY(CAST(:members AS text[]))
    )
    SELECT (SELECT coalesce(json_agg(x), '[]') FROM fact_rows x) AS facts,
           (SELECT coalesce(json_agg(x), '[]') FROM member_rows x) AS members,
           ARRAY(SELECT order_id FROM custody.reservations
                 WHERE order_id = ANY(CAST(:orders AS text[]))) AS seen
    """
)

#: |H ∪ C| per product: the recorded holder count (kept in the same transactions as the
#: accounts) plus the members with an open buy who hold nothing yet. Read only for the
#: products a batch may add a candidate to (most orders come from holders or candidates).
_POSSIBLE_HOLDERS = Statement(
    """
    SELECT p.code, p.holder_count + (
        SELECT count(DISTINCT r.member_id) FROM custody.reservations r
        LEFT JOIN custody.accounts a
          ON a.owner_kind = 'member' AND a.owner_id = r.member_id AND a.asset = r.instrument
        WHERE r.instrument = p.code AND r.side = 'BUY' AND r.status = 'open'
          AND NOT coalesce(a.settled > 0 OR a.pending_in > 0, false)
    ) AS possible
    FROM custody.products p WHERE p.code = ANY(CAST(:codes AS text[]))
    """
)

#: The batch's holds added to its (locked) accounts and its reservation rows, together.
_HOLD_AND_RESERVE = Statement(
    """
    WITH hold AS (
        UPDATE custody.accounts a SET held = a.held + v.amount
        FROM unnest(CAST(:ids AS bigint[]), CAST(:amounts AS bigint[])) AS v(id, amount)
        WHERE a.id = v.id
    )
    INSERT INTO custody.reservations (order_id, member_id, instrument, side, price_fen,
        quantity, remaining, fees_charged, held, account_id, status, created_at)
    SELECT v.order_id, v.member_id, v.instrument, v.side, v.price_fen, v.quantity,
           v.quantity, 0, v.held, v.account_id, 'open', CAST(:now AS timestamptz)
    FROM unnest(CAST(:orders AS text[]), CAST(:members AS text[]), CAST(:codes AS text[]),
                CAST(:sides AS text[]), CAST(:prices AS bigint[]), CAST(:quantities AS bigint[]),
                CAST(:held AS bigint[]), CAST(:accounts AS bigint[]))
         AS v(order_id, member_id, instrument, side, price_fen, quantity, held, account_id)
    """
)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(slots=True)
class _Decision:
    order: OrderSubmit
    correlation_id: str | None
    #: None: accepted; a reject code; or "" for an order custody has seen before (no effect).
    reason: str | None
    account_id: int | None = None
    held: int = 0


async def submit(
    session: Tx,
    order: OrderSubmit,
    shards: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> str | None:
    """Check and reserve one order; forward it to its shard or emit ``order.rejected``.
    Returns the reject reason, or None when the order went on to its book (or was seen
    before)."""
    return (await submit_many(session, [(order, correlation_id_var.get())], shards, schedule))[0]


async def submit_many(
    session: Tx,
    batch: Sequence[tuple[OrderSubmit, str | None]],
    shards: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> list[str | None]:
    """Check and reserve a batch of orders (each with its correlation id) as if one after
    another, in a fixed number of statements; forward each accepted order to its shard and
    emit ``order.rejected`` for the others, in the batch's order. Returns each order's
    reject reason (None when it went on to its book, or was seen before)."""
    orders = [order for order, _ in batch]
    # The accounts to reserve from, in id order (a consumer's batch holds them already).
    await lock_accounts_of_submits(session, orders)
    codes = sorted({o["instrument"] for o in orders})
    products = {
        r["code"]: SimpleNamespace(**r) for r in await _LOCK_PRODUCTS.fetch(session, codes=codes)
    }
    pairs = sorted({(o["member_id"], o["instrument"]) for o in orders})
    (facts,) = await _BATCH_FACTS.fetch(
        session,
        pair_members=[p[0] for p in pairs],
        pair_codes=[p[1] for p in pairs],
        members=sorted({p[0] for p in pairs}),
        orders=sorted({o["order_id"] for o in orders}),
    )
    accounts = {(r["member_id"], r["code"]): SimpleNamespace(**r) for r in _json(facts["facts"])}
    members = {
        r["member_id"]: MemberFacts(r["partner_id"], r["qualified"], r["risk_tolerance"])
        for r in _json(facts["members"])
    }
    seen = set(facts["seen"])
    available: dict[int, int] = {}
    for row in accounts.values():
        if row.cash_id is not None:
            available[row.cash_id] = int(row.cash_available)
        if row.units_id is not None:
            available[row.units_id] = int(row.units_available)
    in_cap = {key: bool(row.in_holders_or_candidates) for key, row in accounts.items()}
    # Members enter H ∪ C only by buying, so only these products' counts can be needed.
    may_grow = sorted(
        {o["instrument"] for o in orders if o["side"] == "BUY" and not in_cap[key_of(o)]}
    )
    possible: dict[str, int] = {}
    if may_grow:
        rows = await _POSSIBLE_HOLDERS.fetch(session, codes=may_grow)
        possible = {r["code"]: int(r["possible"]) for r in rows}

    decisions: list[_Decision] = []
    for order, correlation_id in batch:
        decision = _Decision(order, correlation_id, None)
        decisions.append(decision)
        if order["order_id"] in seen:  # reserved already: submitted again under another id
            decision.reason = ""
            continue
        code, side, member_id = order["instrument"], order["side"], order["member_id"]
        product = products.get(code)
        reason = order_reject_reason(
            side,
            order["partner_id"],
            members.get(member_id),
            None
            if product is None
            else ProductFacts(product.state, product.transferable, product.risk_level),
        )
        price, quantity = order["price_fen"], order["quantity"]
        if reason is None and (price <= 0 or quantity <= 0):
            reason = "INVALID_ORDER"
        key = key_of(order)
        new_candidate = side == "BUY" and not in_cap[key]
        if reason is None and new_candidate:
            assert product is not None  # a known product, or the reason would be set
            if not holder_cap_allows(False, possible[code], product.max_holders):
                reason = "HOLDER_LIMIT_REACHED"
        if reason is None:
            of_pair = accounts[key]
            account = of_pair.cash_id if side == "BUY" else of_pair.units_id
            held = required_hold(side, price, quantity, 0, schedule)
            if account is None or available[account] < held:
                reason = "INSUFFICIENT_FUNDS" if side == "BUY" else "INSUFFICIENT_UNITS"
            else:
                available[account] -= held
                seen.add(order["order_id"])
                decision.account_id, decision.held = account, held
                if new_candidate:
                    in_cap[key] = True
                    possible[code] += 1
        decision.reason = reason
    await _write_reservations(session, [d for d in decisions if d.account_id is not None])
    for d in decisions:
        token = correlation_id_var.set(d.correlation_id)
        try:
            await _forward_or_reject(session, d, shards)
        finally:
            correlation_id_var.reset(token)
    return [d.reason or None for d in decisions]


def key_of(order: OrderSubmit) -> tuple[str, str]:
    return order["member_id"], order["instrument"]


async def _write_reservations(session: Tx, accepted: list[_Decision]) -> None:
    if not accepted:
        return
    holds: dict[int, int] = {}
    for d in accepted:
        assert d.account_id is not None
        holds[d.account_id] = holds.get(d.account_id, 0) + d.held
    ids = sorted(holds)
    await _HOLD_AND_RESERVE.execute(
        session,
        ids=ids,
        amounts=[holds[i] for i in ids],
        orders=[d.order["order_id"] for d in accepted],
        members=[d.order["member_id"] for d in accepted],
        codes=[d.order["instrument"] for d in accepted],
        sides=[d.order["side"] for d in accepted],
        prices=[d.order["price_fen"] for d in accepted],
        quantities=[d.order["quantity"] for d in accepted],
        held=[d.held for d in accepted],
        accounts=[d.account_id for d in accepted],
        now=utc_now(),
    )


async def _forward_or_reject(session: Tx, decision: _Decision, shards: int) -> None:
    order = decision.order
    if decision.reason == "":
        return
    if decision.reason is not None:
        await messages.order_rejected(
            session, order["order_id"], order["member_id"], order["instrument"], decision.reason
        )
        return
    await messages.to_shard(
        session,
        BookCommand(
            command="new",
            instrument=order["instrument"],
            order_id=order["order_id"],
            member_id=order["member_id"],
            side=order["side"],
            price_fen=order["price_fen"],
            quantity=order["quantity"],
            tif=order["time_in_force"],
        ),
        shards,
    )


async def cancel(session: Tx, command: OrderCancel, shards: int) -> None:
    await messages.to_shard(
        session,
        BookCommand(
            command="cancel", instrument=command["instrument"], order_id=command["order_id"]
        ),
        shards,
    )


async def amend(session: Tx, command: OrderAmend, shards: int) -> None:
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

#: The (member, asset) accounts the session's transaction holds locked for order submits.
_LOCKED_SUBMIT_ACCOUNTS = "custody.locked_submit_accounts"
_LOCK_SUBMIT_ACCOUNTS = Statement(
    """
    SELECT a.id FROM custody.accounts a
    JOIN unnest(CAST(:members AS text[]), CAST(:assets AS text[])) AS k(member_id, asset)
      ON a.owner_kind = 'member' AND a.owner_id = k.member_id AND a.asset = k.asset
    ORDER BY a.id
    FOR NO KEY UPDATE OF a
    """
)


async def lock_accounts_of_submits(session: Tx, submits: Sequence[OrderSubmit]) -> None:
    """Lock the accounts a batch of ``order.submit`` will hold from, in id order."""
    keys = sorted(
        {(o["member_id"], "CNY" if o["side"] == "BUY" else o["instrument"]) for o in submits}
    )
    # Locks end with their transaction, and so does this record of them.
    locked: set[tuple[str, str]] = transaction_info(session).setdefault(
        _LOCKED_SUBMIT_ACCOUNTS, set()
    )
    if keys and not locked.issuperset(keys):  # a consumer's batch locked them already
        await _LOCK_SUBMIT_ACCOUNTS.execute(
            session, members=[k[0] for k in keys], assets=[k[1] for k in keys]
        )
        locked.update(keys)
