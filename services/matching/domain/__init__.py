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

``OrderBook`` is the mypyc-compiled build of ``book.py`` when it is built and matches
the sources, else ``book.py`` itself (``implementation.py``; ``IMPLEMENTATION`` says
which). Both behave identically; ``book.py`` is the reference.
"""

from typing import TYPE_CHECKING

from services.matching.domain import book as _pure
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
from services.matching.domain.implementation import select as _select
from services.matching.domain.order import OrderView
from services.matching.domain.types import BookConfigError, BookState, Reason, Side, TimeInForce

# The compiled build of book.py when built and fresh, else book.py itself
# (implementation.py; MATCHING_BOOK=auto|pure|compiled).
_selected, IMPLEMENTATION = _select()
if TYPE_CHECKING:
    OrderBook = _pure.OrderBook
else:
    OrderBook = _selected

__all__ = [
    "FIELDS",
    "IMPLEMENTATION",
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
