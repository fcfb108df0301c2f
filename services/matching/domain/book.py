"""The order book of one product: price-time priority matching, pure and I/O free.

Data layout, chosen for the hot path:

* Orders and price levels are plain list records (layout in ``order.py``): building a
  list is several times cheaper than instantiating a class, and one is built per order.
* ``_levels[side]`` maps a *key* to a level record; the key is the price for bids and
  minus the price for asks, so that on both sides the best level has the largest key.
* ``_keys[side]`` is the ascending list of those keys (``bisect``), best level last:
  reading, removing and adding the best level are O(1) at the end of a list.
* A level record is itself the FIFO: a list ``[total, dead, head, order, order, ...]``
  in time priority, ``head`` the index of its first entry still in play (a new level is
  one list display; no deque). A cancel sets the order's remaining to 0 in O(1) and the
  entry is skipped lazily when it reaches the head (or dropped when the level compacts
  itself because more than half of its entries are dead); matching advances ``head``
  and trims the consumed prefix once it is long.
* The hot paths (the resting fast path of ``submit``, ``_match``, ``cancel``) are
  written out with local variables and literal record indices on purpose: each
  attribute lookup or call saved is a measurable share of a ~1 µs command.
* Two id indexes: ``_open`` maps the id of each open order to its record (about as
  many entries as the book holds orders, so it stays in the CPU cache), and ``_final``
  maps the id of every order that became final in the current business day to its
  status string (``FILLED``, ``CANCELLED``, ``EXPIRED``), so a reused id is refused
  and a late cancel is told ``ORDER_FINAL``. ``_final`` grows with the day (hundreds
  of thousands of ids) but holds only strings, so CPython's garbage collector never
  tracks or traverses it, and the frequent lookups (cancel, amend) hit the small
  ``_open``; only a new order's duplicate check probes ``_final``. (Until this change
  one dict held both, open records and final statuses: every cancel and fill then
  probed the big dict, and every full collection traversed it.)
"""

from __future__ import annotations

import datetime
import hashlib
import json
from bisect import bisect_left, insort
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import orjson

from services.matching.domain.events import (
    AMEND_REJECTED,
    BAND_CHANGED,
    BOOK_STATE_CHANGED,
    CANCEL_REJECTED,
    COMMAND_REJECTED,
    DAY_ROLLED,
    ORDER_ACCEPTED,
    ORDER_AMENDED,
    ORDER_CANCELLED,
    ORDER_EXPIRED,
    ORDER_FILLED,
    ORDER_REJECTED,
    ORDER_RESTED,
    TRADE,
    Event,
)
from services.matching.domain.order import Level, Order, OrderView, view_of
from services.matching.domain.types import (
    BOOK_STATES,
    BUY,
    CANCELLED,
    DAY,
    DELISTED,
    EXPIRED,
    FILLED,
    FOK,
    GTC,
    HALTED,
    IOC,
    PARTIALLY_FILLED,
    SELL,
    SIDES,
    TIMES_IN_FORCE,
    TRADING,
    BookConfigError,
    BookState,
    Reason,
    Side,
    TimeInForce,
)

SNAPSHOT_VERSION = 1
_USER = Reason.USER
#: A level compacts its queue when it holds more dead entries than this and than live ones.
#: (A level's live orders all have remaining > 0, so its total is 0 exactly when it has
#: none: the total doubles as the emptiness test.)
_COMPACT_MIN_DEAD = 16


class OrderBook:
    """Order book and matching engine of one product. Single writer, not thread safe.

    Every command returns the list of events it produced, each stamped with the next
    sequence number. Prices are integer fen, quantities integer units.
    """

    __slots__ = (
        "_ask_keys",
        "_ask_levels",
        "_band_high",
        "_band_low",
        "_bid_keys",
        "_bid_levels",
        "_business_date",
        "_final",
        "_keys",
        "_levels",
        "_lot_size",
        "_min_quantity",
        "_open",
        "_seq",
        "_state",
        "_tick_size",
        "instrument",
    )

    def __init__(
        self,
        instrument: str,
        tick_size_fen: int,
        lot_size: int,
        min_quantity: int,
        band_low_fen: int,
        band_high_fen: int,
        business_date: datetime.date,
        state: BookState = "trading",
        sequence: int = 0,
    ) -> None:
        if tick_size_fen <= 0 or lot_size <= 0 or min_quantity <= 0:
            raise BookConfigError("tick size, lot size and minimum quantity must be positive")
        if state not in BOOK_STATES:
            raise BookConfigError(f"unknown book state {state!r}")
        if sequence < 0:
            raise BookConfigError("sequence must not be negative")
        if not _band_ok(band_low_fen, band_high_fen, tick_size_fen):
            raise BookConfigError("band must be 0 < low <= high, both on tick")
        self.instrument = instrument
        self._tick_size = tick_size_fen
        self._lot_size = lot_size
        self._min_quantity = min_quantity
        self._band_low = band_low_fen
        self._band_high = band_high_fen
        self._business_date = business_date
        self._state: str = state
        #: Sequence number of the last event emitted.
        self._seq = sequence
        self._levels: dict[str, dict[int, Level]] = {BUY: {}, SELL: {}}
        self._keys: dict[str, list[int]] = {BUY: [], SELL: []}
        self._bid_levels = self._levels[BUY]
        self._ask_levels = self._levels[SELL]
        self._bid_keys = self._keys[BUY]
        self._ask_keys = self._keys[SELL]
        self._open: dict[str, Order] = {}
        self._final: dict[str, str] = {}

    # ------------------------------------------------------------------ properties

    @property
    def sequence(self) -> int:
        """Sequence number of the last event emitted (the initial one if none yet)."""
        return self._seq

    @property
    def state(self) -> str:
        return self._state

    @property
    def business_date(self) -> datetime.date:
        return self._business_date

    @property
    def band(self) -> tuple[int, int]:
        return self._band_low, self._band_high

    @property
    def tick_size_fen(self) -> int:
        return self._tick_size

    @property
    def lot_size(self) -> int:
        return self._lot_size

    @property
    def min_quantity(self) -> int:
        return self._min_quantity

    # ------------------------------------------------------------------ queries

    def get_order(self, order_id: str) -> OrderView | None:
        """The open order with this id, or None if unknown or final."""
        order = self._open.get(order_id)
        return view_of(order) if order is not None else None

    def final_status(self, order_id: str) -> str | None:
        """Final status of an order that became final in the current business day."""
        return self._final.get(order_id)

    def __len__(self) -> int:
        """Number of open orders."""
        # Entries from a level's head on, less its dead ones (O(levels), not hot).
        return sum(
            len(level) - level[2] - level[1]
            for book in (self._bid_levels, self._ask_levels)
            for level in book.values()
        )

    def __contains__(self, order_id: object) -> bool:
        return isinstance(order_id, str) and order_id in self._open

    def open_orders(self) -> list[OrderView]:
        """All open orders in priority order: bids best first, then asks best first."""
        return [view_of(o) for o in self._iter_priority()]

    def best_bid(self) -> int | None:
        keys = self._keys[BUY]
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._keys[SELL]
        return -keys[-1] if keys else None

    def depth(self, levels: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated ``(price_fen, total_quantity)`` levels, best first: ``(bids, asks)``."""
        out: list[list[tuple[int, int]]] = []
        for side in (BUY, SELL):
            book = self._levels[side]
            keys = self._keys[side]
            side_levels: list[tuple[int, int]] = []
            for key in reversed(keys[-levels:] if levels > 0 else []):
                side_levels.append((key if side == BUY else -key, book[key][0]))
            out.append(side_levels)
        return out[0], out[1]

    def _iter_priority(self) -> Iterator[Order]:
        for side in (BUY, SELL):
            book = self._levels[side]
            for key in reversed(self._keys[side]):
                level = book[key]
                for order in level[level[2] :]:
                    if order[5]:
                        yield order

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        order_id: str,
        member_id: str,
        side: Side | object,
        price_fen: int | object,
        quantity: int | object,
        tif: TimeInForce | object,
    ) -> list[Event]:
        """Check, accept and match a limit order; rest its remainder if GTC/DAY.

        The checked parameters are typed ``... | object`` on purpose: a bad side, time
        in force, price or quantity (a float, a bool, ``None``) is *rejected* with its
        reason, never rounded, and the compiled build (mypyc checks declared argument
        types at the call) must not turn that into a ``TypeError``.
        """
        seq = self._seq + 1
        # The caller's price and quantity objects, for the records and events: after the
        # checks below narrow ``price_fen`` and ``quantity`` to ``int``, the compiled build
        # would otherwise turn them into machine integers and allocate new int objects
        # for every record, event and dict key. (No cost to speak of in pure Python.)
        price: Any = price_fen
        qty: Any = quantity
        if (
            self._state != TRADING
            # Exact ints only: a float or bool is refused, never rounded.
            or type(price_fen) is not int
            or type(quantity) is not int
            or price_fen % self._tick_size
            or not self._band_low <= price_fen <= self._band_high
            # min_quantity >= 1, so this also refuses zero and negative quantities.
            or quantity < self._min_quantity
            or quantity % self._lot_size
        ):
            return self._reject(seq, order_id, member_id, side, price_fen, quantity, tif)
        # Side, time in force and a duplicate id are checked by the branches below; any
        # failure goes to _reject, which reports the first failed check in the fixed order.
        if tif == GTC or tif == DAY:  # noqa: SIM109 (two compares, no tuple to build)
            # Fast path, the most frequent case: a GTC/DAY order that does not cross
            # rests whole. (Same steps as the resting branch at the end of _match.)
            # Keys: price for bids, -price for asks; the best level has the largest key.
            if side == BUY:
                keys = self._ask_keys
                if not keys or keys[-1] < -price_fen:
                    order = [order_id, member_id, side, price, qty, qty, tif, seq]
                    # The duplicate-id check, and the index insert in the same probe.
                    if (
                        order_id in self._final
                        or self._open.setdefault(order_id, order) is not order
                    ):
                        return self._reject(seq, order_id, member_id, side, price, qty, tif)
                    level = self._bid_levels.get(price)
                    if level is None:
                        self._bid_levels[price] = [qty, 0, 3, order]
                        insort(self._bid_keys, price)
                    else:
                        level.append(order)
                        level[0] += qty
                    self._seq = seq + 1
                    return [
                        (ORDER_ACCEPTED, seq, order_id, member_id, side, price, qty, tif),
                        (ORDER_RESTED, seq + 1, order_id, side, price, qty),
                    ]
            elif side == SELL:
                keys = self._bid_keys
                if not keys or keys[-1] < price_fen:
                    order = [order_id, member_id, side, price, qty, qty, tif, seq]
                    if (
                        order_id in self._final
                        or self._open.setdefault(order_id, order) is not order
                    ):
                        return self._reject(seq, order_id, member_id, side, price, qty, tif)
                    key = -price_fen
                    level = self._ask_levels.get(key)
                    if level is None:
                        self._ask_levels[key] = [qty, 0, 3, order]
                        insort(self._ask_keys, key)
                    else:
                        level.append(order)
                        level[0] += qty
                    self._seq = seq + 1
                    return [
                        (ORDER_ACCEPTED, seq, order_id, member_id, side, price, qty, tif),
                        (ORDER_RESTED, seq + 1, order_id, side, price, qty),
                    ]
            else:
                return self._reject(seq, order_id, member_id, side, price_fen, quantity, tif)
        elif (tif != IOC and tif != FOK) or (side != BUY and side != SELL):
            return self._reject(seq, order_id, member_id, side, price_fen, quantity, tif)
        if order_id in self._open or order_id in self._final:
            return self._reject(seq, order_id, member_id, side, price_fen, quantity, tif)
        return self._match(seq, order_id, member_id, side, price_fen, quantity, tif)

    def _match(
        self,
        seq: int,
        order_id: str,
        member_id: str,
        side: object,
        price_fen: int,
        quantity: int,
        tif: object,
    ) -> list[Event]:
        """Accept a checked order that may cross: match, then rest, cancel or finish it."""
        events: list[Event] = [
            (ORDER_ACCEPTED, seq, order_id, member_id, side, price_fen, quantity, tif)
        ]
        priority = seq
        # A taker BUY crosses ask key k when -k <= limit, i.e. k >= -limit;
        # a taker SELL crosses bid key k (= price) when k >= limit.
        taker_buy = side == BUY
        if taker_buy:
            opp_levels = self._ask_levels
            opp_keys = self._ask_keys
            limit_key = -price_fen
        else:
            opp_levels = self._bid_levels
            opp_keys = self._bid_keys
            limit_key = price_fen

        if tif == FOK and not _fok_fillable(opp_levels, opp_keys, limit_key, member_id, quantity):
            seq += 1
            events.append((ORDER_CANCELLED, seq, order_id, Reason.FOK_UNFILLED, 0, quantity))
            self._final[order_id] = CANCELLED
            self._seq = seq
            return events

        remaining = quantity
        self_trade = False
        if opp_keys and opp_keys[-1] >= limit_key:
            open_ids = self._open
            final = self._final
            business_date = self._business_date
            # Trade ids are "<instrument>-<seq of the Trade event>".
            prefix = self.instrument + "-"
            while True:
                key = opp_keys[-1]
                level = opp_levels[key]
                # Typed locals: the compiled build keeps these as machine integers (and
                # strings) instead of generic objects; no effect in pure Python.
                head: int = level[2]
                level_price = -key if taker_buy else key
                total: int = level[0]
                # A level in the book has at least one live order (total > 0), so this
                # loop ends on a fill that empties the taker or the level, or on an own
                # order. Inactive entries met at the head are dropped.
                while True:
                    maker: Order = level[head]
                    maker_remaining: int = maker[5]
                    if not maker_remaining:
                        head += 1
                        level[1] -= 1
                        continue
                    maker_member: str = maker[1]
                    if maker_member == member_id:
                        self_trade = True
                        break
                    maker_id: str = maker[0]
                    if remaining < maker_remaining:
                        # The taker ends inside this maker: a partial fill of the maker.
                        maker_remaining -= remaining
                        maker[5] = maker_remaining
                        total -= remaining
                        events.append(
                            (
                                TRADE,
                                seq + 1,
                                f"{prefix}{seq + 1}",
                                maker_id,
                                order_id,
                                maker_member,
                                member_id,
                                side,
                                level_price,
                                remaining,
                                business_date,
                            )
                        )
                        seq += 2
                        events.append(
                            (
                                ORDER_FILLED,
                                seq,
                                maker_id,
                                maker[4] - maker_remaining,
                                maker_remaining,
                                PARTIALLY_FILLED,
                            )
                        )
                        remaining = 0
                        break
                    # The maker is filled completely and leaves the book.
                    head += 1
                    total -= maker_remaining
                    remaining -= maker_remaining
                    del open_ids[maker_id]
                    final[maker_id] = FILLED
                    events.append(
                        (
                            TRADE,
                            seq + 1,
                            f"{prefix}{seq + 1}",
                            maker_id,
                            order_id,
                            maker_member,
                            member_id,
                            side,
                            level_price,
                            maker_remaining,
                            business_date,
                        )
                    )
                    seq += 2
                    events.append((ORDER_FILLED, seq, maker_id, maker[4], 0, FILLED))
                    if not remaining or not total:
                        break
                if total:
                    level[0] = total
                    if head > 35 and head + head > len(level):
                        # Trim a long consumed prefix (entries 3..head-1).
                        del level[3:head]
                        head = 3
                    level[2] = head
                else:
                    del opp_levels[key]
                    opp_keys.pop()
                if self_trade or not remaining or not opp_keys or opp_keys[-1] < limit_key:
                    break
            if remaining != quantity:
                seq += 1
                events.append(
                    (
                        ORDER_FILLED,
                        seq,
                        order_id,
                        quantity - remaining,
                        remaining,
                        PARTIALLY_FILLED if remaining else FILLED,
                    )
                )

        if not remaining:
            self._final[order_id] = FILLED
        elif self_trade or tif == IOC:
            seq += 1
            why = Reason.SELF_TRADE_PREVENTED if self_trade else Reason.IOC_REMAINDER
            events.append((ORDER_CANCELLED, seq, order_id, why, quantity - remaining, remaining))
            self._final[order_id] = CANCELLED
        else:
            # Rest the remainder.
            self._rest([order_id, member_id, side, price_fen, quantity, remaining, tif, priority])
            seq += 1
            events.append((ORDER_RESTED, seq, order_id, side, price_fen, remaining))
        self._seq = seq
        return events

    def _reject(
        self,
        seq: int,
        order_id: str,
        member_id: str,
        side: object,
        price_fen: object,
        quantity: object,
        tif: object,
    ) -> list[Event]:
        self._seq = seq
        reason = self._reject_reason(order_id, side, price_fen, quantity, tif)
        return [(ORDER_REJECTED, seq, order_id, member_id, reason)]

    def _reject_reason(
        self, order_id: str, side: object, price_fen: object, quantity: object, tif: object
    ) -> str:
        """The first failed last-line check, in a fixed order (slow path)."""
        if self._state != TRADING:
            return Reason.INSTRUMENT_NOT_TRADING
        if order_id in self._open or order_id in self._final:
            return Reason.DUPLICATE_ORDER_ID
        if side not in SIDES:
            return Reason.INVALID_SIDE
        if tif not in TIMES_IN_FORCE:
            return Reason.INVALID_TIME_IN_FORCE
        if type(price_fen) is not int or price_fen % self._tick_size:
            return Reason.PRICE_OFF_TICK
        if price_fen < self._band_low or price_fen > self._band_high:
            return Reason.PRICE_OUT_OF_BAND
        if type(quantity) is not int or quantity <= 0 or quantity % self._lot_size:
            return Reason.QUANTITY_OFF_LOT
        return Reason.BELOW_MIN_QUANTITY

    def _rest(self, order: Order) -> None:
        """Append an open order to its level (created if new) and index it by id."""
        if order[2] == BUY:
            key = order[3]
            book = self._bid_levels
            keys = self._bid_keys
        else:
            key = -order[3]
            book = self._ask_levels
            keys = self._ask_keys
        level = book.get(key)
        if level is None:
            level = book[key] = [0, 0, 3]
            insort(keys, key)
        level.append(order)
        level[0] += order[5]
        self._open[order[0]] = order

    def _unlink(self, order: Order) -> None:
        """Remove an open order from its level (lazily); the caller records its status."""
        if order[2] == BUY:
            key = order[3]
            book = self._bid_levels
            keys = self._bid_keys
        else:
            key = -order[3]
            book = self._ask_levels
            keys = self._ask_keys
        level = book[key]
        total = level[0] - order[5]
        order[5] = 0
        if total:
            level[0] = total
            dead = level[1] + 1
            level[1] = dead
            if dead > _COMPACT_MIN_DEAD and dead + dead > len(level) - level[2]:
                _compact(level)
        else:
            del book[key]
            del keys[bisect_left(keys, key)]

    # ------------------------------------------------------------------ cancel / amend

    def cancel(self, order_id: str) -> list[Event]:
        """Cancel an open order (allowed while halted)."""
        seq = self._seq + 1
        self._seq = seq
        open_ids = self._open
        # get + del, not pop(): the compiled build has a fast path for these two only.
        order = open_ids.get(order_id)
        if order is None:
            final = order_id in self._final
            reason = Reason.ORDER_FINAL if final else Reason.ORDER_NOT_FOUND
            return [(CANCEL_REJECTED, seq, order_id, reason)]
        del open_ids[order_id]
        # Unlink from the level (inlined _unlink: cancels are a third of the traffic).
        # Typed locals: machine integers in the compiled build; no effect in pure Python.
        remaining: int = order[5]
        order[5] = 0
        price: int = order[3]
        side: str = order[2]
        buy = side == BUY
        if buy:
            key = price
            book = self._bid_levels
        else:
            key = -price
            book = self._ask_levels
        level = book[key]
        total: int = level[0] - remaining
        if total:
            level[0] = total
            dead: int = level[1] + 1
            level[1] = dead
            # 16 is _COMPACT_MIN_DEAD; from head on, the level holds live and dead entries.
            if dead > 16 and dead + dead > len(level) - level[2]:
                _compact(level)
        else:
            del book[key]
            keys = self._bid_keys if buy else self._ask_keys
            del keys[bisect_left(keys, key)]
        self._final[order_id] = CANCELLED
        return [(ORDER_CANCELLED, seq, order_id, _USER, order[4] - remaining, remaining)]

    def amend(self, order_id: str, new_quantity: int | object) -> list[Event]:
        """Reduce an open order's total quantity, keeping its time priority.

        The new total must be on lot, below the current total and above the filled part.
        """
        seq = self._seq + 1
        self._seq = seq
        order = self._open.get(order_id)
        if order is None:
            final = order_id in self._final
            reason = Reason.ORDER_FINAL if final else Reason.ORDER_NOT_FOUND
            return [(AMEND_REJECTED, seq, order_id, reason)]
        if self._state != TRADING:
            return [(AMEND_REJECTED, seq, order_id, Reason.INSTRUMENT_NOT_TRADING)]
        quantity = order[4]
        filled = quantity - order[5]
        if (
            type(new_quantity) is not int
            or not filled < new_quantity < quantity
            or new_quantity % self._lot_size
        ):
            return [(AMEND_REJECTED, seq, order_id, Reason.INVALID_AMEND)]
        released = quantity - new_quantity
        order[4] = new_quantity
        order[5] -= released
        if order[2] == BUY:
            self._bid_levels[order[3]][0] -= released
        else:
            self._ask_levels[-order[3]][0] -= released
        return [(ORDER_AMENDED, seq, order_id, new_quantity, filled, order[5], released)]

    # ------------------------------------------------------------------ book commands

    def halt(self) -> list[Event]:
        """Stop accepting orders and amends; resting orders stay and may be cancelled."""
        return self._transition("halt", TRADING, HALTED)

    def resume(self) -> list[Event]:
        return self._transition("resume", HALTED, TRADING)

    def delist(self) -> list[Event]:
        """Cancel every resting order (reason ``DELISTED``); the book stays delisted."""
        seq = self._seq + 1
        if self._state == DELISTED:
            self._seq = seq
            return [(COMMAND_REJECTED, seq, "delist", Reason.INVALID_STATE_TRANSITION)]
        events: list[Event] = [(BOOK_STATE_CHANGED, seq, self._state, DELISTED)]
        self._state = DELISTED
        final = self._final
        for order in sorted(self._open.values(), key=_by_priority):
            seq += 1
            events.append(
                (ORDER_CANCELLED, seq, order[0], Reason.DELISTED, order[4] - order[5], order[5])
            )
            order[5] = 0
            final[order[0]] = CANCELLED
        self._open.clear()
        for side in (BUY, SELL):
            self._levels[side].clear()
            self._keys[side].clear()
        self._seq = seq
        return events

    def _transition(self, command: str, source: str, target: str) -> list[Event]:
        seq = self._seq + 1
        self._seq = seq
        if self._state != source:
            return [(COMMAND_REJECTED, seq, command, Reason.INVALID_STATE_TRANSITION)]
        self._state = target
        return [(BOOK_STATE_CHANGED, seq, source, target)]

    def roll_day(self, new_date: datetime.date) -> list[Event]:
        """Advance the business date by exactly one day and expire DAY orders.

        The ids of orders that became final during the closing day are forgotten.
        """
        seq = self._seq + 1
        if new_date != self._business_date + datetime.timedelta(days=1):
            self._seq = seq
            return [(COMMAND_REJECTED, seq, "roll_day", Reason.INVALID_BUSINESS_DATE)]
        events: list[Event] = [(DAY_ROLLED, seq, self._business_date, new_date)]
        self._business_date = new_date
        # Forget the closing day's final ids (a new dict: O(1) now, the old one is freed).
        final: dict[str, str] = {}
        self._final = final
        open_ids = self._open
        expiring = sorted((o for o in open_ids.values() if o[6] == DAY), key=_by_priority)
        for order in expiring:
            seq += 1
            events.append((ORDER_EXPIRED, seq, order[0], order[4] - order[5], order[5]))
            self._unlink(order)
            del open_ids[order[0]]
            final[order[0]] = EXPIRED
        self._seq = seq
        return events

    def set_band(self, band_low_fen: int, band_high_fen: int) -> list[Event]:
        """Change the inclusive price band for new orders; resting orders are untouched."""
        seq = self._seq + 1
        self._seq = seq
        if not _band_ok(band_low_fen, band_high_fen, self._tick_size):
            return [(COMMAND_REJECTED, seq, "set_band", Reason.INVALID_BAND)]
        self._band_low = band_low_fen
        self._band_high = band_high_fen
        return [(BAND_CHANGED, seq, band_low_fen, band_high_fen)]

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """The full state as JSON-serialisable plain data.

        ``orders`` lists open orders in priority order (bids best first, then asks
        best first) as ``[order_id, member_id, side, price_fen, quantity, remaining,
        tif, priority]``; ``final`` lists ``[order_id, status]`` sorted by id.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "instrument": self.instrument,
            "tick_size_fen": self._tick_size,
            "lot_size": self._lot_size,
            "min_quantity": self._min_quantity,
            "band_low_fen": self._band_low,
            "band_high_fen": self._band_high,
            "business_date": self._business_date.isoformat(),
            "state": self._state,
            "sequence": self._seq,
            # The order record has exactly this layout; a copy, not the live record.
            "orders": [o[:] for o in self._iter_priority()],
            "final": [[k, v] for k, v in sorted(self._final.items())],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> OrderBook:
        """Rebuild a book from ``snapshot()`` output (also after a JSON round trip)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise BookConfigError(f"unsupported snapshot version {snapshot.get('version')!r}")
        book = cls(
            str(snapshot["instrument"]),
            int(snapshot["tick_size_fen"]),
            int(snapshot["lot_size"]),
            int(snapshot["min_quantity"]),
            int(snapshot["band_low_fen"]),
            int(snapshot["band_high_fen"]),
            datetime.date.fromisoformat(snapshot["business_date"]),
            snapshot["state"],
            int(snapshot["sequence"]),
        )
        for row in snapshot["orders"]:
            order_id, member_id, side, price, quantity, remaining, tif, priority = row
            if side not in SIDES or tif not in TIMES_IN_FORCE or not 0 < remaining <= quantity:
                raise BookConfigError(f"invalid order in snapshot: {row!r}")
            book._rest(
                [
                    str(order_id),
                    str(member_id),
                    side,
                    int(price),
                    int(quantity),
                    int(remaining),
                    tif,
                    int(priority),
                ]
            )
        final = book._final
        for k, v in snapshot["final"]:
            order_id = str(k)
            if order_id in book._open or order_id in final:
                raise BookConfigError(f"order {order_id!r} both open and final in snapshot")
            final[order_id] = str(v)
        return book

    def state_hash(self) -> str:
        """SHA-256 hex digest of the canonical JSON of ``snapshot()``."""
        return snapshot_digest(self.snapshot())


def snapshot_digest(snapshot: dict[str, Any]) -> str:
    """SHA-256 hex digest of a book snapshot's canonical JSON: keys sorted, no spaces,
    non-ASCII escaped (``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=True)``)."""
    # orjson writes the same bytes for this plain data (str keys, str and int values) as
    # long as everything is ASCII, 3x faster: a shard's snapshot hashes every book inside
    # its command cycle. It does not escape non-ASCII: then json does it.
    canonical = orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS)
    if not canonical.isascii():
        canonical = json.dumps(
            snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
    return hashlib.sha256(canonical).hexdigest()


def _fok_fillable(
    levels: dict[int, Level],
    keys: list[int],
    limit_key: int,
    member_id: str,
    quantity: int,
) -> bool:
    """Whether ``quantity`` can be filled before the limit or an own resting order."""
    need = quantity
    for key in reversed(keys):
        if key < limit_key:
            return False
        level = levels[key]
        for order in level[level[2] :]:
            if not order[5]:
                continue
            if order[1] == member_id:
                return False
            need -= order[5]
            if need <= 0:
                return True
    return False


#: Sort key of order records by time priority.
_by_priority = itemgetter(7)


def _compact(level: Level) -> None:
    """Drop the inactive entries of a level's queue, keeping the order of the rest."""
    level[3:] = [o for o in level[level[2] :] if o[5]]
    level[1] = 0
    level[2] = 3


def _band_ok(low: int, high: int, tick: int) -> bool:
    return 0 < low <= high and low % tick == 0 and high % tick == 0
