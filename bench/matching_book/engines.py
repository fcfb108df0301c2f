"""Adapters that drive each engine with the same ops and report the trades it made.

Each adapter exposes ``new(op)``, ``cancel(op)``, ``take(op)`` and, after the timed
run, ``trades()`` as ``(maker idx, taker idx, price, quantity)``. Work that a real
caller must do to use the engine (id mapping, keeping trade records) is inside the
timed calls; turning records into the common format is done afterwards, untimed.
"""

from __future__ import annotations

import datetime
import importlib
from typing import Any, Protocol

from bench.matching_book.stream import Op

ExpectedTrade = tuple[int, int, int, int]


class Engine(Protocol):
    name: str
    notes: str

    def new(self, op: Op) -> None: ...
    def cancel(self, op: Op) -> None: ...
    def take(self, op: Op) -> None: ...
    def trades(self) -> list[ExpectedTrade]: ...


class Ours:
    """services.matching OrderBook with every check on: tick, band, lot, minimum
    quantity, state, duplicate id, self-trade prevention, events (plain tuples) with
    sequence numbers and trade ids. Passive orders are GTC from member M; aggressive
    ones IOC from member T. This one is the pure-Python build (``book.py``)."""

    name = "ours (services.matching), pure Python"
    notes = "full feature set: checks, STP, events + sequence"

    def __init__(self, book_class: Any = None) -> None:
        if book_class is None:
            from services.matching.domain.implementation import pure_book

            book_class = pure_book()
        self.book = book_class("BENCH", 1, 1, 1, 1, 10**9, datetime.date(2026, 3, 2), "trading", 0)
        self._submit = self.book.submit
        self._cancel = self.book.cancel
        self.out: list[Any] = []
        self._keep = self.out.extend

    def new(self, op: Op) -> None:
        # A consumer publishes the events and drops them; only takes' are kept (for
        # the trade check). Rejections would show in open_ok() or the trades.
        self._submit(op[5], "M", "BUY" if op[2] else "SELL", op[3], op[4], "GTC")

    def cancel(self, op: Op) -> None:
        self._cancel(op[5])

    def take(self, op: Op) -> None:
        # Keep the trade records, as every peer adapter does (trade log, callback list,
        # blotters) and nothing more: the other events are published and dropped by a
        # real consumer. The book's API fixes the order of a submit's events:
        # OrderAccepted, then per fill a Trade and the maker's OrderFilled, then the
        # taker's OrderFilled, then at most one outcome event. These orders fill
        # completely (no outcome event), so the Trades are events[1:-1:2]; trades()
        # checks that each kept event is a Trade. Each kept trade is the book's own
        # event object, a plain tuple ("Trade", seq, trade_id, maker_order_id,
        # taker_order_id, maker_member_id, taker_member_id, taker_side, price_fen,
        # quantity, business_date). (A Python-level filter loop costs ~1 us per take.)
        self._keep(
            self._submit(op[5], "T", "BUY" if op[2] else "SELL", op[3], op[4], "IOC")[1:-1:2]
        )

    def trades(self) -> list[ExpectedTrade]:
        # Raw events are (type, seq, trade_id, maker_order_id, taker_order_id,
        # maker_member_id, taker_member_id, taker_side, price_fen, quantity, date).
        if any(e[0] != "Trade" for e in self.out):
            raise AssertionError("an event kept as a trade is not a Trade")
        return [(int(e[3][1:]), int(e[4][1:]), e[8], e[9]) for e in self.out]

    def open_ok(self, live: list[int]) -> bool:
        return sorted(int(v.order_id[1:]) for v in self.book.open_orders()) == live


class OursCompiled(Ours):
    """The same book, the build the service runs: book.py compiled with mypyc by
    ``make install`` (services/matching/build_book.py); fails if not built or stale."""

    name = "ours, compiled (shipped)"
    notes = "same source and features, mypyc build from make install"

    def __init__(self) -> None:
        from services.matching.domain.implementation import compiled_book

        super().__init__(compiled_book())


class Null:
    """Does nothing: the cost of the harness itself (loop, dispatch, adapter call)."""

    name = "null engine (harness floor)"
    notes = "upper bound on any engine's ops/s in this harness"

    def new(self, op: Op) -> None:
        pass

    cancel = take = new

    def trades(self) -> list[ExpectedTrade]:
        return []

    def open_ok(self, live: list[int]) -> bool:
        return True


class Akhil:
    """akhil4n-orderbook: pure Python, SortedDict of OrderedDict levels; assigns its
    own string ids (mapped here); keeps a trade log with datetime stamps."""

    name = "akhil4n-orderbook 0.1.1"
    notes = "no TIF/STP; aggressive orders sent as plain limit orders (fully filled)"

    def __init__(self, module: Any = None) -> None:
        # Peers are imported by name: they are optional and ship no type information.
        self.m = module if module is not None else importlib.import_module("orderbook")
        self.book = self.m.OrderBook()
        self.bid = self.m.OrderSide.BID
        self.ask = self.m.OrderSide.ASK
        self.ids: dict[int, str] = {}

    def _order(self, op: Op) -> Any:
        return self.m.Order(self.bid if op[2] else self.ask, op[3], op[4])

    def new(self, op: Op) -> None:
        order = self._order(op)
        self.ids[op[1]] = order.order_id
        self.book.add_limit_order(order)

    def cancel(self, op: Op) -> None:
        if not self.book.cancel_order(self.ids[op[1]]):
            raise AssertionError(f"cancel failed for {op}")

    def take(self, op: Op) -> None:
        order = self._order(op)
        self.ids[op[1]] = order.order_id
        self.book.add_limit_order(order)

    def open_ok(self, live: list[int]) -> bool:
        return sorted(self.book.orders) == sorted(self.ids[i] for i in live)

    def trades(self) -> list[ExpectedTrade]:
        back = {v: k for k, v in self.ids.items()}
        return [
            (back[t.filler_id], back[t.aggressor_id], int(t.price), t.quantity_filled)
            for t in self.book.trade_log
        ]


class CythonOB(Akhil):
    """cython-orderbook: a Cython build of the same design (Order(side, qty, price))."""

    name = "cython-orderbook 0.1.2"
    notes = "no TIF/STP; aggressive orders sent as plain limit orders (fully filled)"

    def __init__(self) -> None:
        super().__init__(importlib.import_module("cython_orderbook.orderbook"))

    def _order(self, op: Op) -> Any:
        return self.m.Order(self.bid if op[2] else self.ask, op[4], op[3])


class PyOrderBook:
    """pyorderbook: heap of price levels, dict queues, uuid4 ids, Decimal prices;
    ``match`` returns a TradeBlotter per order; cancel takes the Order object."""

    name = "pyorderbook 0.4.9"
    notes = "no TIF/STP; aggressive orders sent as plain limit orders (fully filled)"

    def __init__(self) -> None:
        import logging

        pyorderbook = importlib.import_module("pyorderbook")

        # pyorderbook calls logging.basicConfig(INFO) on import; its hot path logs at
        # DEBUG, which is filtered. Keep it quiet for the bench output.
        logging.getLogger("pyorderbook").setLevel(logging.WARNING)
        self.p = pyorderbook
        self.book = pyorderbook.Book()
        self.orders: dict[int, Any] = {}
        self.blotters: list[Any] = []

    def new(self, op: Op) -> None:
        order = (self.p.bid if op[2] else self.p.ask)("X", op[3], op[4])
        self.orders[op[1]] = order
        self.blotters.append(self.book.match(order))

    def cancel(self, op: Op) -> None:
        self.book.cancel(self.orders[op[1]])

    take = new

    def open_ok(self, live: list[int]) -> bool:
        return set(self.book.order_map) == {self.orders[i].id for i in live}

    def trades(self) -> list[ExpectedTrade]:
        back = {o.id: k for k, o in self.orders.items()}
        return [
            (back[t.standing_order_id], back[t.incoming_order_id], int(t.fill_price), qty)
            for b in self.blotters
            for t in b.trades
            for qty in (t.fill_quantity,)
        ]


class OrderlyChaos:
    """orderly-chaos: C++ book behind ctypes; caller-chosen int ids; trades delivered
    through an ``on_trade`` callback (collected into a list)."""

    name = "orderly-chaos 0.2.0"
    notes = "C++ via ctypes; no TIF/STP; aggressive orders as plain limit orders"

    def __init__(self, collect_trades: bool = True) -> None:
        orderly_chaos = importlib.import_module("orderly_chaos")

        self.collected: list[Any] = []
        self.book = orderly_chaos.LimitOrderBook(
            on_trade=self.collected.append if collect_trades else None
        )
        if not collect_trades:
            self.name = "orderly-chaos 0.2.0 (no trade callback)"
            self.notes = "as above, but trades not reported: only filled quantity checked"
        self.buy = orderly_chaos.Side.BUY
        self.sell = orderly_chaos.Side.SELL
        self.filled = 0
        self._limit = self.book.limit
        self._market = self.book.market
        self._cancel = self.book.cancel

    def new(self, op: Op) -> None:
        self._limit(self.buy if op[2] else self.sell, op[1], op[4], op[3])

    def cancel(self, op: Op) -> None:
        self._cancel(op[1])

    def take(self, op: Op) -> None:
        # A limit order of exactly the liquidity within its limit: it fills fully and
        # never rests, the same outcome as the IOC the other adapters send.
        self.filled += self._limit(self.buy if op[2] else self.sell, op[1], op[4], op[3])

    def trades(self) -> list[ExpectedTrade]:
        return [(t.maker_id, t.taker_id, t.price, t.quantity) for t in self.collected]

    def open_ok(self, live: list[int]) -> bool:
        return len(self.book) == len(live) and all(self.book.has(i) for i in live)


FACTORIES: dict[str, Any] = {
    "null": Null,
    "ours": Ours,
    "ours-compiled": OursCompiled,
    "akhil4n-orderbook": Akhil,
    "cython-orderbook": CythonOB,
    "pyorderbook": PyOrderBook,
    "orderly-chaos": OrderlyChaos,
    "orderly-chaos-nocb": lambda: OrderlyChaos(collect_trades=False),
}
