"""Output events of the matching book.

An event is a plain tuple ``(type, seq, field, ...)``: ``type`` is the event's name (a
string constant below, also its ``"type"`` on the wire), ``seq`` the book's per-product
sequence number (strictly increasing by one across all commands, no gaps), then the
event's other fields in the order of the ``NamedTuple`` of the same name below.

Why plain tuples, not the NamedTuples themselves: a tuple display is one bytecode
(``BUILD_TUPLE``) where a NamedTuple costs a call, and CPython's garbage collector
untracks a plain tuple of atomic values (str, int, date) at its first collection, so
events a consumer keeps (trades) are never traversed again; a NamedTuple instance stays
tracked and is traversed by every older-generation collection. Events are the book's
hot path (about 2.5 per command).

The NamedTuple classes name and type the fields (``FIELDS`` is what the service
publishes); ``typed(event)`` turns a raw event into its NamedTuple, for tests and
debugging. The published JSON is ``{"type": ..., "seq": ..., field: value, ...}`` in
exactly this order, dates as ``YYYY-MM-DD`` (``services/matching/wire.py``).
"""

from __future__ import annotations

import datetime
from typing import Any, Final, NamedTuple

#: A raw event: ``(type, seq, *fields)``.
Event = tuple[Any, ...]

ORDER_ACCEPTED: Final = "OrderAccepted"
ORDER_REJECTED: Final = "OrderRejected"
TRADE: Final = "Trade"
ORDER_FILLED: Final = "OrderFilled"
ORDER_RESTED: Final = "OrderRested"
ORDER_CANCELLED: Final = "OrderCancelled"
ORDER_EXPIRED: Final = "OrderExpired"
ORDER_AMENDED: Final = "OrderAmended"
CANCEL_REJECTED: Final = "CancelRejected"
AMEND_REJECTED: Final = "AmendRejected"
BOOK_STATE_CHANGED: Final = "BookStateChanged"
DAY_ROLLED: Final = "DayRolled"
BAND_CHANGED: Final = "BandChanged"
COMMAND_REJECTED: Final = "CommandRejected"

# Positions in a raw Trade event (the ones consumers read on the hot path).
TRADE_PRICE: Final = 8
TRADE_QUANTITY: Final = 9


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


TypedEvent = (
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

_CLASSES: Final[dict[str, Any]] = {
    cls.__name__: cls
    for cls in (
        OrderAccepted,
        OrderRejected,
        Trade,
        OrderFilled,
        OrderRested,
        OrderCancelled,
        OrderExpired,
        OrderAmended,
        CancelRejected,
        AmendRejected,
        BookStateChanged,
        DayRolled,
        BandChanged,
        CommandRejected,
    )
}

#: Field names of each event type (after ``type``), ``seq`` first: the wire's keys.
FIELDS: Final[dict[str, tuple[str, ...]]] = {name: cls._fields for name, cls in _CLASSES.items()}


def typed(event: Event) -> TypedEvent:
    """The NamedTuple of a raw event (for tests and debugging; not on the hot path)."""
    cls = _CLASSES[event[0]]
    if len(event) != len(cls._fields) + 1:
        raise ValueError(f"malformed {event[0]} event: {event!r}")
    result: TypedEvent = cls._make(event[1:])
    return result
