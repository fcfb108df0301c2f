"""What the dead-letter queues hold, for staff: how many messages each has, and a look at
them decoded (a bundle inflated into its envelopes) without taking them off the queue."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.messaging.envelope import Envelope, EnvelopeError
from shared.messaging.topology import QueueSpec, Topology


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered AMQP message: where it died and why, and what it carried."""

    message_id: str | None
    type: str | None
    routing_key: str | None
    reason: str | None
    deaths: int
    envelopes: list[dict[str, Any]]
    #: Why the body could not be read as envelopes (it went to the queue for that reason).
    undecodable: str | None = None


class NotDeclared(LookupError):
    """The dead-letter queue does not exist (no service declared its queues yet)."""


async def depths(url: str, topology: Topology, queues: Sequence[QueueSpec]) -> dict[str, int]:
    """Each queue's dead-letter queue → how many messages it holds (-1: not declared)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        out: dict[str, int] = {}
        for spec in queues:
            name = topology.dead_letter_queue_name(spec)
            channel = await connection.channel()  # a failed passive declare closes it
            try:
                queue = await channel.declare_queue(name, passive=True)
                out[spec.name] = queue.declaration_result.message_count or 0
            except aio_pika.exceptions.ChannelClosed:
                out[spec.name] = -1
            finally:
                if not channel.is_closed:
                    await channel.close()
        return out
    finally:
        await connection.close()


@asynccontextmanager
async def _dead_letter_queue(
    url: str, topology: Topology, spec: QueueSpec, *, confirms: bool = False
) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue]]:
    """A channel of a connection of its own and the queue's dead-letter queue on it
    (``NotDeclared`` when there is none). Whatever was taken unacknowledged returns to the
    queue when the channel closes."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        name = topology.dead_letter_queue_name(spec)
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise NotDeclared(name) from exc
        yield channel, queue
        await channel.close()
    finally:
        await connection.close()


async def peek(url: str, topology: Topology, spec: QueueSpec, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` messages of the queue's dead-letter queue, decoded. They are taken
    unacknowledged and returned to the queue when the channel closes, so they stay."""
    letters: list[DeadLetter] = []
    async with _dead_letter_queue(url, topology, spec) as (_, queue):
        while len(letters) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(read(message))
    return letters


def read(message: AbstractIncomingMessage) -> DeadLetter:
    x_death = message.headers.get("x-death")
    deaths = [d for d in x_death if isinstance(d, dict)] if isinstance(x_death, list) else []
    first = deaths[0] if deaths else {}
    keys = first.get("routing-keys")
    envelopes: list[dict[str, Any]] = []
    undecodable = None
    try:
        decoded = Envelope.decode_message(message)
        envelopes = [
            {
                "message_id": e.message_id,
                "type": e.type,
                "stream": e.stream,
                "sequence": e.sequence,
                "payload": e.payload,
            }
            for e in decoded
        ]
    except EnvelopeError as exc:
        undecodable = str(exc)
    return DeadLetter(
        message_id=message.message_id,
        type=message.type,
        routing_key=str(keys[0]) if isinstance(keys, list) and keys else message.routing_key,
        reason=str(first["reason"]) if "reason" in first else None,
        deaths=sum(_count(d.get("count", 1)) for d in deaths),
        envelopes=envelopes,
        undecodable=undecodable,
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) else 1


async def replay(url: str, topology: Topology, spec: QueueSpec, limit: int) -> int:
    """Move up to ``limit`` messages from the queue's dead-letter queue back to the queue
    itself (through the default exchange, so no other queue bound to their routing key
    gets them again), oldest first; returns how many moved. Each is taken off the
    dead-letter queue only once the broker has confirmed its copy: a crash in between
    leaves it in both, and the consumer's inbox drops the second."""
    moved = 0
    async with _dead_letter_queue(url, topology, spec, confirms=True) as (channel, dead):
        while moved < limit:
            message = await dead.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {k: v for k, v in message.headers.items() if k != "x-delivery-count"}
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=message.body,
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    message_id=message.message_id,
                    type=message.type,
                    correlation_id=message.correlation_id,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=topology.queue_name(spec),
                mandatory=True,
                timeout=10,
            )
            await message.ack()
            moved += 1
    return moved
