"""Mutable order and price-level records used inside the book, and a read-only view."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class RestingOrder:
    """An open order resting in the book. Internal: callers get ``OrderView``.

    ``remaining`` drops to 0 when the order is filled, cancelled or expired; such an
    entry is no longer open and is skipped (lazily removed) in its level queue.
    """

    __slots__ = (
        "member_id",
        "order_id",
        "price_fen",
        "priority",
        "quantity",
        "remaining",
        "side",
        "tif",
    )

    def __init__(
        self,
        order_id: str,
        member_id: str,
        side: str,
        price_fen: int,
        quantity: int,
        remaining: int,
        tif: str,
        priority: int,
    ) -> None:
        self.order_id = order_id
        self.member_id = member_id
        self.side = side
        self.price_fen = price_fen
        self.quantity = quantity
        self.remaining = remaining
        self.tif = tif
        #: Sequence number of the order's acceptance: lower is earlier (time priority).
        self.priority = priority


class PriceLevel:
    """FIFO queue of orders at one price, with lazy deletion of cancelled entries."""

    __slots__ = ("dead", "live", "price_fen", "queue", "total")

    def __init__(self, price_fen: int) -> None:
        self.price_fen = price_fen
        self.queue: deque[RestingOrder] = deque()
        #: Sum of remaining quantity of the active orders.
        self.total = 0
        #: Number of active orders in ``queue``.
        self.live = 0
        #: Number of inactive entries still in ``queue``.
        self.dead = 0

    def compact(self) -> None:
        self.queue = deque(o for o in self.queue if o.remaining)
        self.dead = 0


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


def view_of(order: RestingOrder) -> OrderView:
    filled = order.quantity - order.remaining
    return OrderView(
        order.order_id,
        order.member_id,
        order.side,
        order.price_fen,
        order.quantity,
        filled,
        order.remaining,
        order.tif,
        order.priority,
        "PARTIALLY_FILLED" if filled else "NEW",
    )
