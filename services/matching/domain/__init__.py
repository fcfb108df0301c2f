"""Pure, I/O-free order book and matching engine of one product."""

from services.matching.domain.book import BookConfigError, OrderBook
from services.matching.domain.events import (
    AmendRejected,
    BandChanged,
    BookStateChanged,
    CancelRejected,
    CommandRejected,
    DayRolled,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRested,
    Trade,
)
from services.matching.domain.order import OrderView
from services.matching.domain.types import BookState, Reason, Side, TimeInForce

__all__ = [
    "AmendRejected",
    "BandChanged",
    "BookConfigError",
    "BookState",
    "BookStateChanged",
    "CancelRejected",
    "CommandRejected",
    "DayRolled",
    "Event",
    "OrderAccepted",
    "OrderAmended",
    "OrderBook",
    "OrderCancelled",
    "OrderExpired",
    "OrderFilled",
    "OrderRejected",
    "OrderRested",
    "OrderView",
    "Reason",
    "Side",
    "TimeInForce",
    "Trade",
]
