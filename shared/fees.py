"""The trading fee schedule (流通服务费), charged to both sides of every trade.

Shared because two services apply it: custody (reservations and settlement obligations)
and clearing (trade capture and netting). It is configuration, not one service's rule.

A trade's fee for one side is the tier fee for the trade's amount, reduced so that
the order's running total of fees never passes the per-order cap, and never more
than the trade's amount (a seller's fee is taken from the same trade's proceeds).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.money import check_fen


@dataclass(frozen=True, slots=True)
class FeeTier:
    """Trades whose amount is at least ``threshold_fen`` pay ``fee_fen`` per side."""

    threshold_fen: int
    fee_fen: int


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Tiers ordered by ascending threshold (the first starts at 0) and a per-order cap."""

    tiers: tuple[FeeTier, ...]
    order_cap_fen: int

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("a fee schedule needs at least one tier")
        if self.tiers[0].threshold_fen != 0:
            raise ValueError("the first fee tier must start at 0")
        for tier in self.tiers:
            check_fen(tier.threshold_fen)
            check_fen(tier.fee_fen)
            if tier.threshold_fen < 0 or tier.fee_fen < 0:
                raise ValueError("fee tiers must not be negative")
        for lower, upper in zip(self.tiers, self.tiers[1:], strict=False):
            if upper.threshold_fen <= lower.threshold_fen:
                raise ValueError("fee tier thresholds must be strictly ascending")
        check_fen(self.order_cap_fen)
        if self.order_cap_fen < 0:
            raise ValueError("the per-order fee cap must not be negative")

    @property
    def max_fee_per_order_fen(self) -> int:
        """The most fees one order can ever owe: what a buy must reserve on top of its cost."""
        return self.order_cap_fen

    def tier_fee_fen(self, amount_fen: int) -> int:
        """The uncapped fee of the tier that ``amount_fen`` falls in."""
        _check_amount(amount_fen)
        fee = self.tiers[0].fee_fen
        for tier in self.tiers:
            if amount_fen >= tier.threshold_fen:
                fee = tier.fee_fen
        return fee

    def trade_fee_fen(self, amount_fen: int, already_charged_fen: int) -> int:
        """Fee for one side of a trade of ``amount_fen``, given the fees its order already paid."""
        _check_amount(amount_fen)
        check_fen(already_charged_fen)
        if already_charged_fen < 0:
            raise ValueError("fees already charged must not be negative")
        room = max(0, self.order_cap_fen - already_charged_fen)
        return min(self.tier_fee_fen(amount_fen), room, amount_fen)


def _check_amount(amount_fen: int) -> None:
    check_fen(amount_fen)
    if amount_fen <= 0:
        raise ValueError(f"a trade amount must be positive, got {amount_fen} fen")


#: The default schedule: below 50,000.00 CNY 2.00 per side, 50,000.00 or more 5.00;
#: each order's fees total at most 5.00.
DEFAULT_FEE_SCHEDULE = FeeSchedule(
    tiers=(FeeTier(threshold_fen=0, fee_fen=200), FeeTier(threshold_fen=5_000_000, fee_fen=500)),
    order_cap_fen=500,
)

#: The most fees one order can owe under the default schedule (5.00).
MAX_FEE_PER_ORDER_FEN = DEFAULT_FEE_SCHEDULE.max_fee_per_order_fen


def trade_fee_fen(
    amount_fen: int,
    already_charged_fen: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> int:
    """Fee for one side of a trade, given the fees already charged to that side's order."""
    return schedule.trade_fee_fen(amount_fen, already_charged_fen)
