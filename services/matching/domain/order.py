"""Order and price-level records used inside the book, and a read-only view.

The book's hot path builds one order record per accepted order and one level record
per new price level. Both are plain lists indexed by the constants below: a list
display is about four times cheaper to build than a class instance with ``__init__``
(measured in ``docs/benchmarks.md``), and an indexed read costs the same as a slot.

Order record ``[order_id, member_id, side, price_fen, quantity, remaining, tif,
priority]``: ``remaining`` drops to 0 when the order is filled, cancelled or expired;
such an entry is no longer open and is skipped (lazily removed) in its level queue.
``priority`` is the sequence number of the order's acceptance (lower is earlier).

Level record ``[total, dead, head, order, order, ...]``: the level's orders in time
priority from index 3 on; ``head`` is the index of the first entry still in play
(entries before it were consumed by matching); ``total`` is the sum of the remaining
quantity of the live orders (so it is 0 exactly when the level has none); ``dead`` is
the number of inactive (cancelled) entries at or after ``head``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: An order record (see the module docstring for its layout).
Order = list[Any]
#: A price-level record (see the module docstring for its layout).
Level = list[Any]

# Indices into an order record. The book's hot path spells them as literals (a
# constant index is cheaper than a global lookup); these names document them.
O_ID, O_MEMBER, O_SIDE, O_PRICE, O_QTY, O_REMAINING, O_TIF, O_PRIORITY = range(8)
# Indices into a level record.
L_TOTAL, L_DEAD, L_HEAD, L_FIRST = range(4)


class OrderView(NamedTuple):
    """Read-only view of an open order."""

    order_id: str
    member_id: str
    side: str
    price_fen: int
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    tif: str
    priority: int
    status: str


def view_of(order: Order) -> OrderView:
    quantity = order[4]
    remaining = order[5]
    filled = quantity - remaining
    return OrderView(
        order[0],
        order[1],
        order[2],
        order[3],
        quantity,
        filled,
        remaining,
        order[6],
        order[7],
        "PARTIALLY_FILLED" if filled else "NEW",
    )
