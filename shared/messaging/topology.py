"""Every exchange and queue, declared in one place.

One durable topic exchange carries all messages; each queue is a durable quorum queue
with a delivery limit, after which the broker moves the message to the queue's own
dead-letter queue (at-least-once dead-lettering, so nothing is dropped on the way).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.abc import FieldTable


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue, named without the broker prefix, and the routing keys bound to it."""

    name: str
    bindings: tuple[str, ...]
    #: One consumer at a time receives messages; others wait as hot standbys.
    single_active_consumer: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    delivery_limit: int = 5

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    def queue_name(self, spec: QueueSpec) -> str:
        return f"{self.prefix}.{spec.name}"

    def dead_letter_queue_name(self, spec: QueueSpec) -> str:
        return f"{self.queue_name(spec)}.dlq"

    def queue_arguments(self, spec: QueueSpec) -> FieldTable:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": self.queue_name(spec),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-single-active-consumer": spec.single_active_consumer,
        }

    async def declare_exchanges(self, channel: AbstractChannel) -> AbstractExchange:
        events = await channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        return events

    async def declare_queues(
        self, channel: AbstractChannel, specs: Iterable[QueueSpec]
    ) -> dict[str, AbstractQueue]:
        declared: dict[str, AbstractQueue] = {}
        for spec in specs:
            name = self.queue_name(spec)
            dead = await channel.declare_queue(
                self.dead_letter_queue_name(spec),
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )
            await dead.bind(self.dead_letter_exchange, routing_key=name)
            queue = await channel.declare_queue(
                name, durable=True, arguments=self.queue_arguments(spec)
            )
            for key in spec.bindings:
                await queue.bind(self.events_exchange, routing_key=key)
            declared[spec.name] = queue
        return declared
