"""Publishing book commands to matching shards and collecting the book events it emits."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika

from shared.contracts import BOOK_COMMAND, shard_of, shard_routing_key, system_queues
from shared.ids import uuid7
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import Envelope
from shared.messaging.topology import QueueSpec, Topology
from tests.support import env

SHARDS = 2
EVENTS_TAP = QueueSpec("test.book-tap", ("book.#",))


def command_envelope(payload: dict[str, Any], sequence: int = 1) -> Envelope:
    return Envelope(str(uuid7()), BOOK_COMMAND, "test", "test-commands", sequence, payload)


def command_message(envelope: Envelope) -> OutgoingMessage:
    code = envelope.payload["instrument"]
    return OutgoingMessage.from_envelope(shard_routing_key(shard_of(code, SHARDS)), envelope)


@asynccontextmanager
async def command_broker(prefix: str) -> AsyncIterator[Broker]:
    broker = Broker(
        env.AMQP_URL,
        Topology(prefix),
        connection_name="test-publisher",
        prefetch=100,
        queues=[*system_queues(SHARDS), EVENTS_TAP],
    )
    broker.start()
    await broker.wait_connected(timeout=20)
    try:
        yield broker
    finally:
        await broker.close()


async def drain(prefix: str, spec: QueueSpec) -> list[Envelope]:
    """Every message now in a queue, acknowledged and decoded."""
    out: list[Envelope] = []
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(prefix).queue_name(spec))
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            out.extend(Envelope.decode_message(message))
            await message.ack()
    return out


async def purge(prefix: str, *specs: QueueSpec) -> None:
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for spec in specs:
            await (await channel.get_queue(Topology(prefix).queue_name(spec))).purge()


async def publish_all(broker: Broker, envelopes: list[Envelope], chunk: int = 500) -> None:
    for start in range(0, len(envelopes), chunk):
        await broker.publish([command_message(e) for e in envelopes[start : start + chunk]])
        await asyncio.sleep(0)
