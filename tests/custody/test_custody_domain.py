"""Pure rules: reservation arithmetic, price bands, eligibility, netting and the hash chain."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.custody.domain.eligibility import (
    MemberFacts,
    ProductFacts,
    holder_cap_allows,
    order_reject_reason,
)
from services.custody.domain.journal import GENESIS_HASH, PostingLine, entry_hash
from services.custody.domain.products import price_band
from services.custody.domain.reservations import ReservationError, apply_fill, required_hold
from services.custody.domain.settlement import (
    SettlementTrade,
    SettlementWithdrawal,
    compare,
    net,
)
from shared.fees import MAX_FEE_PER_ORDER_FEN


def test_buy_reserves_cost_plus_the_most_fees_an_order_can_owe() -> None:
    assert required_hold("BUY", 100_00, 10, 0) == 1000_00 + MAX_FEE_PER_ORDER_FEN
    assert required_hold("BUY", 100_00, 10, 200) == 1000_00 + 300
    assert required_hold("SELL", 100_00, 10, 0) == 10
    assert required_hold("BUY", 100_00, 0, 0) == 0


def test_price_improvement_and_fee_allowance_are_released_at_once() -> None:
    held = required_hold("BUY", 100_00, 10, 0)
    # 4 units at 99.00 (maker price below the limit): 396.00, fee 2.00
    fill = apply_fill("BUY", 100_00, 10, 0, held, 99_00, 4)
    assert fill.fee_fen == 200
    assert fill.committed == 396_00 + 200
    assert fill.new_held == 100_00 * 6 + 300
    assert fill.released == 4 * 1_00  # the price improvement
    # the rest fills: nothing more to keep, the unused fee allowance comes back
    last = apply_fill("BUY", 100_00, 6, 200, fill.new_held, 100_00, 6)
    assert last.fee_fen == 200
    assert last.new_held == 0
    assert last.released == 100  # 5.00 allowance − 2.00 − 2.00


def test_a_fill_beyond_the_order_or_its_limit_is_refused() -> None:
    with pytest.raises(ReservationError):
        apply_fill("BUY", 100_00, 5, 0, required_hold("BUY", 100_00, 5, 0), 100_00, 6)
    with pytest.raises(ReservationError):
        apply_fill("BUY", 100_00, 5, 0, required_hold("BUY", 100_00, 5, 0), 100_01, 1)
    with pytest.raises(ReservationError):
        apply_fill("SELL", 100_00, 5, 0, 5, 99_99, 1)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 10_000_00),
    quantity=st.integers(1, 5_000),
    fills=st.lists(st.tuples(st.integers(1, 5_000), st.integers(0, 10_000_00)), max_size=12),
)
def test_buy_reservation_is_exactly_the_rule_after_any_fills(
    limit: int, quantity: int, fills: list[tuple[int, int]]
) -> None:
    remaining, fees, held = quantity, 0, required_hold("BUY", limit, quantity, 0)
    committed_total = released_total = 0
    start = held
    for qty, improvement in fills:
        if remaining == 0:
            break
        qty = min(qty, remaining)
        price = max(1, limit - improvement)
        fill = apply_fill("BUY", limit, remaining, fees, held, price, qty)
        assert fill.released >= 0
        assert fill.committed >= 0
        assert fill.new_fees_charged_fen <= MAX_FEE_PER_ORDER_FEN
        remaining, fees, held = fill.new_remaining, fill.new_fees_charged_fen, fill.new_held
        committed_total += fill.committed
        released_total += fill.released
        if remaining:
            assert held == limit * remaining + (MAX_FEE_PER_ORDER_FEN - fees)
        else:
            assert held == 0
    # nothing is created or lost: what was reserved is committed, released or still held
    assert start == committed_total + released_total + held


@settings(max_examples=300, deadline=None)
@given(
    reference=st.integers(1, 10_000_000),
    tick=st.integers(1, 1_000),
    pct=st.sampled_from(["0", "1", "5", "10", "12.5", "20", "33.3333", "99"]),
)
def test_price_band_is_inclusive_on_ticks_and_inside_the_exact_band(
    reference: int, tick: int, pct: str
) -> None:
    from fractions import Fraction

    low, high = price_band(reference, pct, tick)
    share = Fraction(pct) / 100
    exact_low, exact_high = reference * (1 - share), reference * (1 + share)
    assert low % tick == 0
    assert high % tick == 0
    assert exact_low <= low < exact_low + tick
    assert exact_high - tick < high <= exact_high


def test_price_band_hand_numbers() -> None:
    assert price_band(100_00, "10", 1) == (90_00, 110_00)
    assert price_band(100_05, "10", 10) == (90_10, 110_00)  # 90.045 up, 110.055 down


def test_eligibility_reasons_in_order() -> None:
    member = MemberFacts("p1", qualified=True, risk_tolerance="C3")
    product = ProductFacts("trading", transferable=True, risk_level="R3")
    assert order_reject_reason("BUY", "p1", member, product) is None
    assert order_reject_reason("BUY", "p2", member, product) == "UNKNOWN_MEMBER"
    assert order_reject_reason("BUY", "p1", None, product) == "UNKNOWN_MEMBER"
    assert (
        order_reject_reason("BUY", "p1", member, ProductFacts("halted", True, "R3"))
        == "INSTRUMENT_NOT_TRADING"
    )
    assert (
        order_reject_reason("SELL", "p1", member, ProductFacts("trading", False, "R3"))
        == "NOT_TRANSFERABLE"
    )
    assert (
        order_reject_reason("BUY", "p1", MemberFacts("p1", False, "C5"), product) == "NOT_QUALIFIED"
    )
    assert (
        order_reject_reason("BUY", "p1", member, ProductFacts("trading", True, "R4"))
        == "UNSUITABLE_RISK_LEVEL"
    )
    # selling needs neither qualification nor suitability
    assert order_reject_reason("SELL", "p1", MemberFacts("p1", False, "C1"), product) is None


def test_holder_cap_counts_candidates() -> None:
    assert holder_cap_allows(False, 199, 200)
    assert not holder_cap_allows(False, 200, 200)
    assert holder_cap_allows(True, 200, 200)


trade_strategy = st.builds(
    SettlementTrade,
    trade_id=st.uuids().map(str),
    instrument=st.sampled_from(["P1", "P2"]),
    price_fen=st.integers(1, 100_000),
    quantity=st.integers(1, 1_000),
    buyer_member_id=st.sampled_from(["a", "b", "c"]),
    seller_member_id=st.sampled_from(["d", "e"]),
    buyer_fee_fen=st.integers(0, 500),
    seller_fee_fen=st.integers(0, 1),
)


@settings(max_examples=200, deadline=None)
@given(
    trades=st.lists(trade_strategy, max_size=30),
    withdrawals=st.lists(
        st.builds(
            SettlementWithdrawal,
            st.uuids().map(str),
            st.sampled_from(["a", "d"]),
            st.integers(1, 10_000),
        ),
        max_size=3,
    ),
)
def test_netting_postings_balance_and_match_the_deltas(
    trades: list[SettlementTrade], withdrawals: list[SettlementWithdrawal]
) -> None:
    result = net(trades, withdrawals, "batch")
    per_asset: dict[str, int] = {}
    per_account: dict[tuple[str, str, str], int] = {}
    for p in result.postings:
        per_asset[p.account[2]] = per_asset.get(p.account[2], 0) + p.amount
        per_account[p.account] = per_account.get(p.account, 0) + p.amount
    assert all(v == 0 for v in per_asset.values())
    for key, delta in result.deltas.items():
        assert per_account.get(key, 0) == delta.settled
    pending_in = sum(d.pending_in for d in result.deltas.values())
    pending_out = sum(d.pending_out for d in result.deltas.values())
    # what leaves pending_out equals what leaves pending_in, asset by asset (cash: fees included)
    assert pending_in == pending_out
    assert result.fee_total_fen == sum(t.buyer_fee_fen + t.seller_fee_fen for t in trades)


def test_compare_names_missing_unknown_and_different_trades() -> None:
    a = SettlementTrade("t1", "P", 100, 1, "b", "s", 2, 2)
    b = SettlementTrade("t2", "P", 100, 1, "b", "s", 2, 2)
    changed = SettlementTrade("t2", "P", 100, 1, "b", "s", 2, 0)
    extra = SettlementTrade("t3", "P", 100, 1, "b", "s", 2, 2)
    assert compare([a, b], {"t1": a, "t2": b}).empty
    mismatch = compare([a, changed, extra], {"t1": a, "t2": b, "t4": a})
    assert mismatch.different == ["t2"]
    assert mismatch.unknown_to_custody == ["t3"]
    assert mismatch.missing_from_batch == ["t4"]


def test_entry_hash_covers_every_field() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    lines = [PostingLine(1, "CNY", -5, "DEPOSIT", "r"), PostingLine(2, "CNY", 5, "DEPOSIT", "r")]
    base = entry_hash(GENESIS_HASH, 1, "e_1", "DEPOSIT", "r", date(2026, 1, 1), moment, lines)
    altered = [PostingLine(1, "CNY", -6, "DEPOSIT", "r"), lines[1]]
    assert base != entry_hash(
        GENESIS_HASH, 1, "e_1", "DEPOSIT", "r", date(2026, 1, 1), moment, altered
    )
    assert base != entry_hash(
        GENESIS_HASH, 2, "e_1", "DEPOSIT", "r", date(2026, 1, 1), moment, lines
    )
    assert base != entry_hash("1" * 64, 1, "e_1", "DEPOSIT", "r", date(2026, 1, 1), moment, lines)
