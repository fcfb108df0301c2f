"""Handing deliveries to a consumer in batches of whatever has already arrived: one
transaction for many messages under load, and no waiting for a batch to fill when idle
(unless the consumer asks to linger: see ``DeliveryBatcher``)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

#: A delivery: the broker's message, or the message tagged with where it came from.
D = TypeVar("D")


class DeliveryBatcher(Generic[D]):
    """Batches of up to ``max_batch`` deliveries, one at a time.

    With ``linger_seconds``, a batch is taken that long after its first delivery arrived:
    for a consumer off the orders' path (clearing's capture), fewer, larger transactions
    leave the CPU to the consumers an order waits for.
    """

    def __init__(
        self,
        process: Callable[[Sequence[D]], Awaitable[None]],
        *,
        max_batch: int,
        name: str,
        linger_seconds: float = 0.0,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._name = name
        self._linger = linger_seconds
        self._pending: asyncio.Queue[D] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def receive(self, delivery: D) -> None:
        """The broker's callback: buffer the delivery."""
        await self._pending.put(delivery)

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name=f"batches-{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _work(self) -> None:
        while True:
            batch = [await self._pending.get()]
            if self._linger > 0:
                await asyncio.sleep(self._linger)
            while len(batch) < self._max_batch and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch of deliveries failed", extra={"consumer": self._name})
