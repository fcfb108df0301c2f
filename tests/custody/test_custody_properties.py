"""Property-based: random sequences of deposits, orders, fills, cancels, amends, withdrawals
and settlements keep every ledger invariant (the `exchange ledger verify` checks) after
every step, on the real database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody import cash, settlement
from services.custody.schemas import BatchTrade, SettlementBatchRequest, WithdrawalCreate
from services.custody.settings import CustodySettings
from shared.db import unit_of_work
from shared.errors import ProblemError
from shared.fees import trade_fee_fen
from shared.ids import new_id
from shared.money import format_fen
from tests.custody.helpers import (
    allocate,
    assert_ledger_ok,
    book,
    cash_fen,
    deposit,
    new_member,
    new_product,
    past_date,
    submit,
    trade_event,
)

MEMBERS = 4
op = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, MEMBERS - 1), st.integers(1, 500_00)),
    st.tuples(
        st.just("order"),
        st.integers(0, MEMBERS - 1),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(95_00, 105_00),
        st.integers(1, 40),
    ),
    st.tuples(st.just("fill"), st.integers(0, 50), st.integers(0, 50), st.integers(1, 40)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("amend"), st.integers(0, 50), st.integers(1, 40)),
    st.tuples(st.just("withdraw"), st.integers(0, MEMBERS - 1), st.integers(1, 300_00)),
    st.tuples(st.just("settle")),
)


@dataclass
class Open:
    order_id: str
    member: str
    side: str
    price: int
    remaining: int
    fees: int = 0


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=5, max_size=25))
async def test_random_operations_keep_every_invariant(
    ops: list[tuple[Any, ...]],
    factory: async_sessionmaker[AsyncSession],
    settings: CustodySettings,
    engine: AsyncEngine,
) -> None:
    code = await new_product(factory, settings, issue_size=1_000)
    members = [await new_member(factory, settings) for _ in range(MEMBERS)]
    for m in members[:2]:
        await allocate(factory, code, m, 200)
    deposited = 0
    open_orders: list[Open] = []
    day = past_date()
    day_trades: list[BatchTrade] = []
    seq = 0
    for step in ops:
        kind = step[0]
        if kind == "deposit":
            await deposit(factory, members[step[1]], step[2])
            deposited += step[2]
        elif kind == "order":
            _, who, side, price, qty = step
            order_id, reason = await submit(factory, settings, members[who], code, side, price, qty)
            if reason is None:
                open_orders.append(Open(order_id, members[who], side, price, qty))
        elif kind == "fill":
            buys = [o for o in open_orders if o.side == "BUY"]
            sells = [o for o in open_orders if o.side == "SELL"]
            if not buys or not sells:
                continue
            b, s = buys[step[1] % len(buys)], sells[step[2] % len(sells)]
            if b.member == s.member or s.price > b.price:
                continue
            qty = min(step[3], b.remaining, s.remaining)
            seq += 1
            event = trade_event(seq, b.order_id, s.order_id, b.member, s.member, s.price, qty, day)
            await book(factory, code, [event])
            amount = s.price * qty
            bfee, sfee = trade_fee_fen(amount, b.fees), trade_fee_fen(amount, s.fees)
            b.fees, s.fees = b.fees + bfee, s.fees + sfee
            day_trades.append(
                BatchTrade(
                    trade_id=event["trade_id"],
                    instrument=code,
                    price_fen=s.price,
                    quantity=qty,
                    buyer_member_id=b.member,
                    seller_member_id=s.member,
                    buyer_fee_fen=bfee,
                    seller_fee_fen=sfee,
                )
            )
            for o in (b, s):
                o.remaining -= qty
                if o.remaining == 0:
                    seq += 1
                    await book(
                        factory,
                        code,
                        [
                            {
                                "type": "OrderFilled",
                                "seq": seq,
                                "order_id": o.order_id,
                                "filled_quantity": qty,
                                "remaining_quantity": 0,
                                "status": "FILLED",
                            }
                        ],
                    )
                    open_orders.remove(o)
        elif kind == "cancel" and open_orders:
            o = open_orders.pop(step[1] % len(open_orders))
            seq += 1
            await book(
                factory,
                code,
                [
                    {
                        "type": "OrderCancelled",
                        "seq": seq,
                        "order_id": o.order_id,
                        "reason": "USER",
                        "filled_quantity": 0,
                        "remaining_quantity": o.remaining,
                    }
                ],
            )
        elif kind == "amend" and open_orders:
            o = open_orders[step[1] % len(open_orders)]
            new_remaining = max(1, o.remaining - step[2])
            if new_remaining < o.remaining:
                seq += 1
                await book(
                    factory,
                    code,
                    [
                        {
                            "type": "OrderAmended",
                            "seq": seq,
                            "order_id": o.order_id,
                            "quantity": new_remaining,
                            "filled_quantity": 0,
                            "remaining_quantity": new_remaining,
                            "released_quantity": o.remaining - new_remaining,
                        }
                    ],
                )
                o.remaining = new_remaining
        elif kind == "withdraw":
            try:
                async with unit_of_work(factory) as session:
                    await cash.request_withdrawal(
                        session,
                        members[step[1]],
                        None,
                        WithdrawalCreate(amount=format_fen(step[2])),
                    )
            except ProblemError as exc:
                if exc.code != "INSUFFICIENT_FUNDS":
                    raise
        elif kind == "settle":
            async with unit_of_work(factory) as session:
                await settlement.apply_batch(
                    session,
                    SettlementBatchRequest(
                        batch_id=new_id("b"),
                        business_date=day,
                        trades=day_trades,
                        withdrawal_ids=None,
                    ),
                    settings,
                )
            day, day_trades = past_date(), []
        await assert_ledger_ok(engine)
    # cash is conserved among these members and the fee account: trades only move it around
    totals = [await cash_fen(factory, m) for m in members]
    fees = sum(t.buyer_fee_fen + t.seller_fee_fen for t in day_trades)
    settled_and_pending = sum(t["settled"] + t["pending_in"] - t["pending_out"] for t in totals)
    assert settled_and_pending + fees <= deposited
    assert all(t["available"] >= 0 for t in totals)
