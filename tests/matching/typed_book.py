"""``TypedBook``: an ``OrderBook`` whose commands return typed events, for readable tests.

The book returns raw events, plain tuples ``(type, seq, *fields)``; this wrapper turns
each into its NamedTuple with ``typed()`` (which also checks the tuple's length), so
tests can compare with ``OrderRested(2, "o1", ...)`` and read ``event.reason``.
Everything else is passed through to the wrapped book (``raw``).
"""

from __future__ import annotations

from typing import Any

from services.matching.domain import OrderBook, TypedEvent, typed

COMMANDS = frozenset(
    {"submit", "cancel", "amend", "halt", "resume", "delist", "roll_day", "set_band"}
)


class TypedBook:
    def __init__(self, raw: OrderBook) -> None:
        self.raw = raw

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> TypedBook:
        return cls(OrderBook.restore(snapshot))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if name not in COMMANDS:
            return attr

        def command(*args: Any, **kwargs: Any) -> list[TypedEvent]:
            events = attr(*args, **kwargs)
            assert type(events) is list
            assert all(type(e) is tuple for e in events)
            return [typed(e) for e in events]

        return command

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.raw
