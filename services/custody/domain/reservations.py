"""Reservation arithmetic for orders (冻结): what an open order must keep held, and what a
fill turns into a settlement obligation or releases.

A buy's reservation while it is open is exactly ``limit × remaining + (cap − fees charged)``;
a sell's is its remaining quantity. A fill moves the trade's needs (buyer: amount + fee;
seller: units) into ``pending_out`` and releases whatever else the order no longer needs
(price improvement, the unused part of the fee allowance once the order is done).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule

Side = Literal["BUY", "SELL"]


def required_hold(
    side: Side,
    price_fen: int,
    remaining: int,
    fees_charged_fen: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> int:
    """What an order with ``remaining`` units still open must keep reserved.

    A finished order (remaining 0) needs nothing: no further trade can charge it a fee.
    """
    if remaining < 0 or fees_charged_fen < 0 or price_fen <= 0:
        raise ValueError("remaining, fees and price must be non-negative (price positive)")
    if remaining == 0:
        return 0
    if side == "SELL":
        return remaining
    allowance = max(0, schedule.order_cap_fen - fees_charged_fen)
    return price_fen * remaining + allowance


@dataclass(frozen=True, slots=True)
class FillEffect:
    """One side of one trade, as seen by that side's order reservation."""

    #: The fee charged to this side for this trade (0 for the units leg).
    fee_fen: int
    #: Moved from held to pending_out on the reserved account (cash for buys, units for sells).
    committed: int
    #: Released from held back to available.
    released: int
    #: The order's reservation after the fill.
    new_held: int
    new_remaining: int
    new_fees_charged_fen: int


class ReservationError(ValueError):
    """A fill the reservation cannot cover: custody and the book disagree."""


def apply_fill(
    side: Side,
    limit_fen: int,
    remaining: int,
    fees_charged_fen: int,
    held: int,
    trade_price_fen: int,
    quantity: int,
    schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE,
) -> FillEffect:
    """The effect of one trade of ``quantity`` at ``trade_price_fen`` on one order."""
    if quantity <= 0 or quantity > remaining:
        raise ReservationError(f"fill of {quantity} exceeds the remaining {remaining}")
    if side == "BUY" and trade_price_fen > limit_fen:
        raise ReservationError(f"buy limited at {limit_fen} filled at {trade_price_fen}")
    if side == "SELL" and trade_price_fen < limit_fen:
        raise ReservationError(f"sell limited at {limit_fen} filled at {trade_price_fen}")
    amount = trade_price_fen * quantity
    fee = schedule.trade_fee_fen(amount, fees_charged_fen)
    new_remaining = remaining - quantity
    new_fees = fees_charged_fen + fee
    committed = amount + fee if side == "BUY" else quantity
    new_held = required_hold(side, limit_fen, new_remaining, new_fees, schedule)
    released = held - committed - new_held
    if released < 0:
        raise ReservationError(
            f"reservation {held} cannot cover {committed} committed and {new_held} still needed"
        )
    return FillEffect(
        fee_fen=fee,
        committed=committed,
        released=released,
        new_held=new_held,
        new_remaining=new_remaining,
        new_fees_charged_fen=new_fees,
    )
