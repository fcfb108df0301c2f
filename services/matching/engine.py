"""The books of one matching shard: applies commands in order, deterministically.

No I/O here. The same commands with the same ``executed_at`` stamps always give the same
events and the same state, which is what recovery by replay relies on.
"""

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from services.matching.domain import Event, OrderBook
from services.matching.domain.book import snapshot_digest
from services.matching.domain.events import DAY_ROLLED, TRADE, TRADE_PRICE, TRADE_QUANTITY
from services.matching.market import MarketStats
from services.matching.wire import CommandError, check_command, event_to_wire

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class BookOutput:
    """The events one command produced on one book, ready to publish."""

    instrument: str
    executed_at: str
    events: list[dict[str, Any]]


class ShardEngine:
    def __init__(self, shard: int) -> None:
        self.shard = shard
        #: Sequence number of the last command applied (the journal's head).
        self.head = 0
        self.business_date: datetime.date | None = None
        self.books: dict[str, OrderBook] = {}
        self.stats: dict[str, MarketStats] = {}
        #: Messages published per book: the sequence of the book's outbox stream.
        self.published: dict[str, int] = {}

    def apply(self, seq: int, raw: dict[str, Any], executed_at: str) -> list[BookOutput]:
        """Apply command number `seq`; the caller guarantees `seq == head + 1`."""
        if seq != self.head + 1:
            raise RuntimeError(f"shard {self.shard}: command {seq} applied after {self.head}")
        self.head = seq
        try:
            command = check_command(raw)
        except CommandError:
            return []
        name = command["command"]
        if name == "roll":
            return self._roll(datetime.date.fromisoformat(command["business_date"]), executed_at)
        code = command["instrument"]
        if name == "list":
            return self._list(command, executed_at)
        book = self.books.get(code)
        if book is None:
            return []
        if name == "new":
            events = book.submit(
                command["order_id"],
                command["member_id"],
                command["side"],
                command["price_fen"],
                command["quantity"],
                command["tif"],
            )
        elif name == "cancel":
            events = book.cancel(command["order_id"])
        elif name == "amend":
            events = book.amend(command["order_id"], command["quantity"])
        elif name == "halt":
            events = book.halt()
        elif name == "resume":
            events = book.resume()
        elif name == "delist":
            events = book.delist()
        else:  # set_band
            events = book.set_band(command["band_low_fen"], command["band_high_fen"])
        return [self._output(code, events, executed_at)] if events else []

    def _list(self, command: Any, executed_at: str) -> list[BookOutput]:
        code = command["instrument"]
        if code in self.books:
            return []  # listing is idempotent: the book already exists
        # The book opens on its listing date. A ``list`` that reaches the shard after a
        # ``roll`` (they come on two outbox streams: custody's and clearing's) finds the shard
        # already past that date: the book then rolls forward at once, reporting DayRolled
        # for every day it missed, so that the end-of-day completeness check (every product
        # listed on or before D reports D -> D+1) never waits for it.
        business_date = datetime.date.fromisoformat(command["business_date"])
        book = OrderBook(
            code,
            command["tick_fen"],
            command["lot"],
            command["min_qty"],
            command["band_low_fen"],
            command["band_high_fen"],
            business_date,
            command.get("state", "trading"),
        )
        self.books[code] = book
        self.stats[code] = MarketStats(command.get("reference_price_fen", command["band_low_fen"]))
        self.published[code] = 0
        outputs: list[BookOutput] = []
        while self.business_date is not None and book.business_date < self.business_date:
            following = book.business_date + datetime.timedelta(days=1)
            outputs.append(self._output(code, book.roll_day(following), executed_at))
        return outputs

    def _roll(self, business_date: datetime.date, executed_at: str) -> list[BookOutput]:
        if self.business_date is None or business_date > self.business_date:
            self.business_date = business_date
        return [
            self._output(code, book.roll_day(business_date), executed_at)
            for code, book in sorted(self.books.items())
        ]

    def _output(self, code: str, events: list[Event], executed_at: str) -> BookOutput:
        stats = self.stats[code]
        for event in events:
            kind = event[0]
            if kind == TRADE:
                stats.on_trade(event[TRADE_PRICE], event[TRADE_QUANTITY], executed_at, event[1])
            elif kind == DAY_ROLLED:
                stats.new_day()
        self.published[code] += 1
        return BookOutput(code, executed_at, [event_to_wire(e) for e in events])

    def books_hash(self) -> str:
        """One digest over every book's state, to prove a rebuilt shard equals the lost one."""
        return self.books_hash_of({code: book.snapshot() for code, book in self.books.items()})

    @staticmethod
    def books_hash_of(books: dict[str, Any]) -> str:
        """``books_hash`` from the books' snapshots (``snapshot()["books"]``), so that a
        snapshot being saved is not taken twice."""
        digest = hashlib.sha256()
        for code in sorted(books):
            digest.update(f"{code}:{snapshot_digest(books[code])};".encode())
        return digest.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "shard": self.shard,
            "head": self.head,
            "business_date": self.business_date.isoformat() if self.business_date else None,
            "books": {code: book.snapshot() for code, book in self.books.items()},
            "stats": {code: stats.snapshot() for code, stats in self.stats.items()},
            "published": dict(self.published),
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> "ShardEngine":
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported shard snapshot version {data.get('version')!r}")
        engine = cls(int(data["shard"]))
        engine.head = int(data["head"])
        if data["business_date"]:
            engine.business_date = datetime.date.fromisoformat(data["business_date"])
        engine.books = {code: OrderBook.restore(b) for code, b in data["books"].items()}
        engine.stats = {code: MarketStats.restore(s) for code, s in data["stats"].items()}
        engine.published = {code: int(n) for code, n in data["published"].items()}
        return engine
