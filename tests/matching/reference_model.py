"""A deliberately naive order book used as the oracle in differential tests.

It shares no code with ``services.matching``: orders are dicts in one list, and every
match scans and sorts that list. Slow and obviously correct is the point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RefTrade:
    maker_order_id: str
    taker_order_id: str
    maker_member_id: str
    taker_member_id: str
    price_fen: int
    quantity: int


@dataclass
class RefBook:
    tick: int
    lot: int
    min_qty: int
    low: int
    high: int
    trading: bool = True
    clock: int = 0
    open: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    trades: list[RefTrade] = field(default_factory=list)

    def _crosses(self, taker_side: str, limit: int, resting: dict[str, Any]) -> bool:
        if resting["side"] == taker_side:
            return False
        if taker_side == "BUY":
            return bool(resting["price"] <= limit)
        return bool(resting["price"] >= limit)

    def _queue(self, taker_side: str, limit: int) -> list[dict[str, Any]]:
        """Resting orders the taker could trade with, in the order it would meet them."""
        candidates = [o for o in self.open if self._crosses(taker_side, limit, o)]
        if taker_side == "BUY":
            candidates.sort(key=lambda o: (o["price"], o["time"]))
        else:
            candidates.sort(key=lambda o: (-o["price"], o["time"]))
        return candidates

    def submit(self, order_id: str, member: str, side: str, price: int, qty: int, tif: str) -> str:
        """Returns an outcome string: 'rejected:R', 'cancelled:R', 'filled' or 'rested'."""
        if not self.trading:
            return "rejected:INSTRUMENT_NOT_TRADING"
        if order_id in self.seen:
            return "rejected:DUPLICATE_ORDER_ID"
        if price % self.tick != 0:
            return "rejected:PRICE_OFF_TICK"
        if not (self.low <= price <= self.high):
            return "rejected:PRICE_OUT_OF_BAND"
        if qty <= 0 or qty % self.lot != 0:
            return "rejected:QUANTITY_OFF_LOT"
        if qty < self.min_qty:
            return "rejected:BELOW_MIN_QUANTITY"
        self.seen.add(order_id)
        self.clock += 1
        queue = self._queue(side, price)

        # Liquidity reachable before meeting an own order.
        reachable = 0
        for resting in queue:
            if resting["member"] == member:
                break
            reachable += resting["remaining"]
        if tif == "FOK" and reachable < qty:
            return "cancelled:FOK_UNFILLED"

        remaining = qty
        stopped_by_own = False
        for resting in queue:
            if remaining == 0:
                break
            if resting["member"] == member:
                stopped_by_own = True
                break
            q = min(remaining, resting["remaining"])
            self.trades.append(
                RefTrade(resting["id"], order_id, resting["member"], member, resting["price"], q)
            )
            resting["remaining"] -= q
            remaining -= q
        self.open = [o for o in self.open if o["remaining"] > 0]

        if remaining == 0:
            return "filled"
        if stopped_by_own:
            return "cancelled:SELF_TRADE_PREVENTED"
        if tif == "IOC":
            return "cancelled:IOC_REMAINDER"
        self.open.append(
            {
                "id": order_id,
                "member": member,
                "side": side,
                "price": price,
                "qty": qty,
                "remaining": remaining,
                "tif": tif,
                "time": self.clock,
            }
        )
        return "rested"

    def _find(self, order_id: str) -> dict[str, Any] | None:
        for o in self.open:
            if o["id"] == order_id:
                return o
        return None

    def cancel(self, order_id: str) -> str:
        o = self._find(order_id)
        if o is None:
            return "rejected:ORDER_FINAL" if order_id in self.seen else "rejected:ORDER_NOT_FOUND"
        self.open.remove(o)
        return "cancelled:USER"

    def amend(self, order_id: str, new_qty: int) -> str:
        o = self._find(order_id)
        if o is None:
            return "rejected:ORDER_FINAL" if order_id in self.seen else "rejected:ORDER_NOT_FOUND"
        if not self.trading:
            return "rejected:INSTRUMENT_NOT_TRADING"
        filled = o["qty"] - o["remaining"]
        if new_qty >= o["qty"] or new_qty <= filled or new_qty % self.lot != 0:
            return "rejected:INVALID_AMEND"
        o["remaining"] = new_qty - filled
        o["qty"] = new_qty
        return "amended"

    def open_orders(self) -> list[tuple[str, str, int, int]]:
        """(id, side, price, remaining) in priority order: bids best first, then asks."""
        bids = sorted(
            (o for o in self.open if o["side"] == "BUY"), key=lambda o: (-o["price"], o["time"])
        )
        asks = sorted(
            (o for o in self.open if o["side"] == "SELL"), key=lambda o: (o["price"], o["time"])
        )
        return [(o["id"], o["side"], o["price"], o["remaining"]) for o in bids + asks]
