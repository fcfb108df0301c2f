"""Market statistics of one book for the current business date: ticker and recent trades."""

from collections import deque
from dataclasses import dataclass, field
from typing import Any

RECENT_TRADES = 1000


@dataclass(slots=True)
class MarketStats:
    reference_price_fen: int
    last_fen: int | None = None
    open_fen: int | None = None
    high_fen: int | None = None
    low_fen: int | None = None
    volume: int = 0
    turnover_fen: int = 0
    #: (price_fen, quantity, executed_at, sequence), newest last.
    recent: deque[tuple[int, int, str, int]] = field(
        default_factory=lambda: deque(maxlen=RECENT_TRADES)
    )

    def on_trade(self, price_fen: int, quantity: int, executed_at: str, sequence: int) -> None:
        if self.open_fen is None:
            self.open_fen = price_fen
        self.last_fen = price_fen
        self.high_fen = price_fen if self.high_fen is None else max(self.high_fen, price_fen)
        self.low_fen = price_fen if self.low_fen is None else min(self.low_fen, price_fen)
        self.volume += quantity
        self.turnover_fen += price_fen * quantity
        self.recent.append((price_fen, quantity, executed_at, sequence))

    def new_day(self) -> None:
        """A new business date: the ticker starts again; the last price becomes the reference
        until clearing sets the settlement price."""
        if self.last_fen is not None:
            self.reference_price_fen = self.last_fen
        self.last_fen = self.open_fen = self.high_fen = self.low_fen = None
        self.volume = self.turnover_fen = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "reference_price_fen": self.reference_price_fen,
            "last_fen": self.last_fen,
            "open_fen": self.open_fen,
            "high_fen": self.high_fen,
            "low_fen": self.low_fen,
            "volume": self.volume,
            "turnover_fen": self.turnover_fen,
            "recent": [list(t) for t in self.recent],
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> "MarketStats":
        stats = cls(
            reference_price_fen=data["reference_price_fen"],
            last_fen=data["last_fen"],
            open_fen=data["open_fen"],
            high_fen=data["high_fen"],
            low_fen=data["low_fen"],
            volume=data["volume"],
            turnover_fen=data["turnover_fen"],
        )
        stats.recent.extend((p, q, t, s) for p, q, t, s in data["recent"])
        return stats
