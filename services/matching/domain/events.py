"""Output events of the matching book.

Every event is an immutable ``NamedTuple`` whose first field ``seq`` is the book's
per-product sequence number: strictly increasing by one across all commands, no gaps.
Tuples are the cheapest typed records CPython has, and events are on the hot path.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple


class OrderAccepted(NamedTuple):
    """An order passed the last-line checks; matching follows in later events."""

    seq: int
    order_id: str
    member_id: str
    side: str
    price_fen: int
    quantity: int
    tif: str


class OrderRejected(NamedTuple):
    """A submitted order failed a last-line check; it never existed in the book."""

    seq: int
    order_id: str
    member_id: str
    reason: str


class Trade(NamedTuple):
    """One execution, at the maker's price."""

    seq: int
    trade_id: str
    maker_order_id: str
    taker_order_id: str
    maker_member_id: str
    taker_member_id: str
    taker_side: str
    price_fen: int
    quantity: int
    business_date: datetime.date


class OrderFilled(NamedTuple):
    """Fill state of an order after trades.

    Emitted for the maker after each trade, and once for the taker after its matching.
    """

    seq: int
    order_id: str
    filled_quantity: int
    remaining_quantity: int
    status: str


class OrderRested(NamedTuple):
    """The (remainder of an) accepted GTC/DAY order now rests in the book."""

    seq: int
    order_id: str
    side: str
    price_fen: int
    remaining_quantity: int


class OrderCancelled(NamedTuple):
    """An order left the book (or its remainder was dropped) with a reason."""

    seq: int
    order_id: str
    reason: str
    filled_quantity: int
    remaining_quantity: int


class OrderExpired(NamedTuple):
    """A DAY order expired at the day roll."""

    seq: int
    order_id: str
    filled_quantity: int
    remaining_quantity: int


class OrderAmended(NamedTuple):
    """An order's total quantity was reduced; it keeps its time priority."""

    seq: int
    order_id: str
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    released_quantity: int


class CancelRejected(NamedTuple):
    """A cancel request that changed nothing."""

    seq: int
    order_id: str
    reason: str


class AmendRejected(NamedTuple):
    """An amend request that changed nothing."""

    seq: int
    order_id: str
    reason: str


class BookStateChanged(NamedTuple):
    """The book moved to ``state`` (trading, halted or delisted)."""

    seq: int
    previous_state: str
    state: str


class DayRolled(NamedTuple):
    """The business date advanced; later trades carry ``business_date``."""

    seq: int
    previous_date: datetime.date
    business_date: datetime.date


class BandChanged(NamedTuple):
    """The inclusive price band changed."""

    seq: int
    band_low_fen: int
    band_high_fen: int


class CommandRejected(NamedTuple):
    """A book-level command (halt, resume, delist, roll_day, set_band) was refused."""

    seq: int
    command: str
    reason: str


Event = (
    OrderAccepted
    | OrderRejected
    | Trade
    | OrderFilled
    | OrderRested
    | OrderCancelled
    | OrderExpired
    | OrderAmended
    | CancelRejected
    | AmendRejected
    | BookStateChanged
    | DayRolled
    | BandChanged
    | CommandRejected
)
