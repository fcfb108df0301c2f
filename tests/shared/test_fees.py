"""Fee schedule: tiers, the 50,000.00 boundary, the per-order cap, fee ≤ amount."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.fees import (
    DEFAULT_FEE_SCHEDULE,
    MAX_FEE_PER_ORDER_FEN,
    FeeSchedule,
    FeeTier,
    trade_fee_fen,
)

CAP = 500  # 5.00, written out independently of the code under test


def tier_of(amount_fen: int) -> int:
    return 500 if amount_fen >= 5_000_000 else 200


@pytest.mark.parametrize(
    ("amount_fen", "expected"),
    [
        (4_999_999, 200),  # 49,999.99 → 2.00
        (5_000_000, 500),  # 50,000.00 → 5.00
        (5_000_001, 500),
        (1_000_000, 200),
        (100_000_000_00, 500),
        (100, 100),  # a 1.00 trade pays 1.00, never more than its amount
        (1, 1),  # 0.01
        (199, 199),
        (200, 200),
    ],
)
def test_single_trade_fee(amount_fen: int, expected: int) -> None:
    assert trade_fee_fen(amount_fen, 0) == expected


def test_max_fee_per_order_is_five_yuan() -> None:
    assert MAX_FEE_PER_ORDER_FEN == 500
    assert DEFAULT_FEE_SCHEDULE.max_fee_per_order_fen == 500


def test_cap_across_small_fills() -> None:
    # four fills of an order below the tier: 2.00, 2.00, then 1.00 up to the cap, then 0
    charged = 0
    fees = []
    for _ in range(4):
        fee = trade_fee_fen(1_000_00, charged)
        fees.append(fee)
        charged += fee
    assert fees == [200, 200, 100, 0]


def test_cap_after_a_large_fill() -> None:
    assert trade_fee_fen(6_000_000, 0) == 500
    assert trade_fee_fen(6_000_000, 500) == 0
    assert trade_fee_fen(100, 200) == 100
    assert trade_fee_fen(6_000_000, 200) == 300


def test_already_over_cap_pays_nothing() -> None:
    assert trade_fee_fen(6_000_000, 900) == 0


@pytest.mark.parametrize("amount_fen", [0, -1])
def test_non_positive_amount_rejected(amount_fen: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        trade_fee_fen(amount_fen, 0)


def test_negative_already_charged_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        trade_fee_fen(100, -1)


def test_custom_schedule() -> None:
    schedule = FeeSchedule(
        tiers=(FeeTier(0, 100), FeeTier(10_000, 300), FeeTier(1_000_000, 1_000)),
        order_cap_fen=1_500,
    )
    assert schedule.trade_fee_fen(9_999, 0) == 100
    assert schedule.trade_fee_fen(10_000, 0) == 300
    assert schedule.trade_fee_fen(1_000_000, 0) == 1_000
    assert schedule.trade_fee_fen(1_000_000, 1_000) == 500
    assert schedule.max_fee_per_order_fen == 1_500


@pytest.mark.parametrize(
    ("tiers", "cap", "message"),
    [
        ((), 500, "at least one tier"),
        ((FeeTier(1, 200),), 500, "start at 0"),
        ((FeeTier(0, 200), FeeTier(0, 500)), 500, "ascending"),
        ((FeeTier(0, -1),), 500, "negative"),
        ((FeeTier(0, 200),), -1, "negative"),
    ],
)
def test_invalid_schedules(tiers: tuple[FeeTier, ...], cap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeeSchedule(tiers=tiers, order_cap_fen=cap)


amounts = st.one_of(
    st.integers(min_value=1, max_value=1_000),
    st.integers(min_value=4_999_000, max_value=5_001_000),
    st.integers(min_value=1, max_value=10**10),
)


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), amounts), min_size=1, max_size=40
    )
)
def test_cap_holds_for_many_fills_on_both_sides(fills: list[tuple[int, int, int]]) -> None:
    """Fills between 4 buy orders and 4 sell orders: each order's fees stay within the cap,
    each fee is the largest allowed by tier, amount and the order's remaining room."""
    charged: dict[tuple[str, int], int] = {}
    for buy_order, sell_order, amount in fills:
        for order in (("buy", buy_order), ("sell", sell_order)):
            before = charged.get(order, 0)
            fee = trade_fee_fen(amount, before)
            assert 0 <= fee <= amount
            assert fee <= tier_of(amount)
            assert before + fee <= CAP
            # nothing was withheld without a reason
            assert fee in {tier_of(amount), amount, CAP - before}
            charged[order] = before + fee
    for total in charged.values():
        assert total <= CAP
