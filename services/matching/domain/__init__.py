"""Pure, I/O-free order book and matching engine of one product.

``OrderBook`` holds integer prices (fen) and quantities (units). Every command returns
the list of events it caused; every event's ``seq`` (index 1, after the type) is the book's
per-product sequence number, one more than the event before it, across all commands.

Events are plain tuples ``(type, seq, *fields)`` (``events.py``: why, and the fields of
each type as a NamedTuple; ``typed(event)`` converts one). Events of one ``submit``, in
order:

1. ``OrderRejected`` alone (a last-line check failed; nothing changed but ``seq``), or
   ``OrderAccepted``;
2. for each fill, in price-time priority: ``Trade`` (at the maker's price) followed by
   the maker's ``OrderFilled``;
3. if anything filled, the taker's ``OrderFilled`` (its totals after matching);
4. then exactly one of: ``OrderRested`` (GTC/DAY remainder now in the book),
   ``OrderCancelled`` (``IOC_REMAINDER``, ``SELF_TRADE_PREVENTED`` or ``FOK_UNFILLED``),
   or nothing (fully filled).

``cancel`` gives ``OrderCancelled`` (reason ``USER``) or ``CancelRejected``
(``ORDER_NOT_FOUND``, ``ORDER_FINAL``); ``amend`` gives ``OrderAmended`` or
``AmendRejected`` (``INVALID_AMEND``, ``INSTRUMENT_NOT_TRADING``, ...); ``halt``,
``resume`` and ``delist`` give ``BookStateChanged`` (``delist`` then one
``OrderCancelled`` with reason ``DELISTED`` per resting order, in priority order);
``roll_day`` gives ``DayRolled`` then one ``OrderExpired`` per DAY order; ``set_band``
gives ``BandChanged``; a refused book command gives ``CommandRejected``.

The ids of orders that became final during a business day are remembered until the
next ``roll_day`` (for ``DUPLICATE_ORDER_ID`` and ``ORDER_FINAL``); DAY orders that a
roll expires count as final in the new day. Older ids are the service's to police.
"""

from services.matching.domain.book import BookConfigError, OrderBook
from services.matching.domain.events import (
    FIELDS,
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
    TypedEvent,
    typed,
)
from services.matching.domain.order import OrderView
from services.matching.domain.types import BookState, Reason, Side, TimeInForce

__all__ = [
    "FIELDS",
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
    "TypedEvent",
    "typed",
]
