"""WebSocket fan-out: ``depth:{code}``, ``trades:{code}`` and a partner's own ``orders``.

Fed by the view updater. Only one gateway instance consumes ``gateway.events`` (single
active consumer); with ``EXCHANGE_WS_FANOUT=postgres`` (the default) the updater sends
its pushes with ``pg_notify`` in the same transaction as the view change, and every
instance LISTENs and feeds its own subscribers, so a client may connect to any instance.
With ``local`` the pushes go only to the consuming instance's subscribers, after commit.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import WebSocket

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


@dataclass(eq=False)
class Subscriber:
    socket: WebSocket
    partner_id: str
    channels: set[str] = field(default_factory=set)
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._depth_pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.depth_source: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None

    def add(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def wants(self, channel: str) -> bool:
        return any(channel in s.channels for s in self._subscribers)

    def _offer(self, subscriber: Subscriber, message: dict[str, Any]) -> None:
        try:
            subscriber.queue.put_nowait(orjson.dumps(message))
        except asyncio.QueueFull:
            log.warning("websocket subscriber too slow; dropping it")
            self.remove(subscriber)
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(subscriber.socket.close(code=1013))

    def publish(self, channel: str, data: dict[str, Any]) -> None:
        for subscriber in list(self._subscribers):
            if channel in subscriber.channels:
                self._offer(subscriber, {"channel": channel, "data": data})

    def publish_order(self, partner_id: str, order: dict[str, Any]) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.partner_id == partner_id and "orders" in subscriber.channels:
                self._offer(subscriber, {"channel": "orders", "data": order})

    def apply(self, message: dict[str, Any]) -> None:
        """Deliver one push to this process's subscribers."""
        kind = message.get("k")
        if kind == "order":
            self.publish_order(str(message["partner"]), message["data"])
        elif kind == "trade":
            self.publish(f"trades:{message['instrument']}", message["data"])
        elif kind == "book":
            self.book_changed(str(message["instrument"]))

    def book_changed(self, instrument: str) -> None:
        """Push a fresh depth snapshot to ``depth:{code}`` subscribers (coalesced)."""
        channel = f"depth:{instrument}"
        if (
            not self.wants(channel)
            or instrument in self._depth_pending
            or self.depth_source is None
        ):
            return
        self._depth_pending.add(instrument)
        task = asyncio.get_running_loop().create_task(self._push_depth(instrument))
        self._tasks.add(task)  # a strong reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _push_depth(self, instrument: str) -> None:
        try:
            await asyncio.sleep(0)
            self._depth_pending.discard(instrument)
            assert self.depth_source is not None
            snapshot = await self.depth_source(instrument)
            if snapshot is not None:
                self.publish(f"depth:{instrument}", snapshot)
        except Exception:
            log.warning("depth snapshot for websocket failed", exc_info=True)


class PendingPushes:
    """What one transaction of the view updater will push once it has committed."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[str, dict[str, Any]]] = {}
        self.trades: list[tuple[str, dict[str, Any]]] = []
        self.books: set[str] = set()
        self.webhooks = False

    def flush(self, hub: Hub) -> None:
        for message in self.drain():
            hub.apply(message)

    def drain(self) -> list[dict[str, Any]]:
        """The pushes as messages (what goes through PostgreSQL in ``postgres`` fan-out)."""
        messages: list[dict[str, Any]] = [
            {"k": "order", "partner": partner_id, "data": order}
            for partner_id, order in self.orders.values()
        ]
        messages += [{"k": "trade", "instrument": i, "data": trade} for i, trade in self.trades]
        messages += [{"k": "book", "instrument": i} for i in sorted(self.books)]
        self.orders, self.trades, self.books = {}, [], set()
        return messages


def channels_of(raw: Any) -> set[str]:
    if not isinstance(raw, list):
        return set()
    wanted: set[str] = set()
    for item in raw:
        if not isinstance(item, str):
            continue
        if item == "orders" or (item.startswith(("depth:", "trades:")) and len(item) <= 32):
            wanted.add(item)
    return wanted
