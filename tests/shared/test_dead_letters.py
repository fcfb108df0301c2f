"""`exchange dlq`: staff see what a dead-letter queue holds, compressed bundles inflated
into their envelopes; looking leaves the messages where they are, and a replay sends them
back to their own queue only (real RabbitMQ)."""

import asyncio
import subprocess
import sys

import aio_pika
import orjson

from shared.contracts import system_queues
from shared.messaging.broker import OutgoingMessage, bundle
from shared.messaging.envelope import DEFLATE, Envelope
from tests.support import env
from tests.support.broker_admin import queue_depth
from tests.support.msgtest import running_broker
from tests.support.wait import wait_until


def exchange(namespace: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange_cli.main", "dlq", *args],
        env=env.service_env(EXCHANGE_BROKER_PREFIX=namespace, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_staff_see_a_dead_lettered_bundle_decoded_then_send_it_back(
    broker_namespace: str,
) -> None:
    namespace = f"{broker_namespace}.dlq"
    queues = system_queues(2)
    book = next(spec for spec in queues if spec.name == "clearing.book")
    envelopes = [
        Envelope(
            message_id=f"m{n}",
            type="book.events",
            producer="matching",
            stream="book:X1",
            sequence=n,
            payload={"instrument": "X1", "events": [{"type": "OrderAccepted", "seq": n}]},
        )
        for n in (1, 2, 3)
    ]
    [packed] = bundle([OutgoingMessage.from_envelope("book.X1", e) for e in envelopes], 10)
    assert packed.content_encoding == DEFLATE
    async with running_broker(namespace, queues, name="dlq-test") as broker:
        await broker.publish([packed])
        dead_letter_queue = broker.topology.dead_letter_queue_name(book)
        connection = await aio_pika.connect(env.AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(broker.topology.queue_name(book))
            async with queue.iterator() as deliveries:  # a single-active-consumer queue
                async for message in deliveries:
                    await message.reject(requeue=False)  # as a consumer does with a poison
                    break

        async def dead_lettered() -> bool:
            return await queue_depth(dead_letter_queue) == 1

        await wait_until(dead_lettered, message="the bundle dead-lettered")

        listed = await asyncio.to_thread(exchange, namespace, "list")
        assert listed.returncode == 0, listed.stderr
        rows = {
            line.split()[1]: line.split()[3]
            for line in listed.stdout.splitlines()
            if "│" in line and line.split()[1] != "queue"
        }
        assert rows["clearing.book"] == "1"
        assert rows["custody.book"] == "0"

        for _ in range(2):  # looking twice shows the same: nothing is taken off the queue
            shown = await asyncio.to_thread(exchange, namespace, "show", "clearing.book")
            assert shown.returncode == 0, shown.stderr
            [line] = shown.stdout.splitlines()
            letter = orjson.loads(line)
            assert letter["reason"] == "rejected"
            assert letter["routing_key"] == "book.X1"
            assert letter["undecodable"] is None
            assert [e["message_id"] for e in letter["envelopes"]] == ["m1", "m2", "m3"]
            assert letter["envelopes"][2]["payload"] == envelopes[2].payload
            assert await queue_depth(dead_letter_queue) == 1

        # Replayed: back on its own queue only (not on the others bound to book.#), whole.
        others = [broker.topology.queue_name(s) for s in queues if s.name != "clearing.book"]
        before = [await queue_depth(name) for name in others]
        replayed = await asyncio.to_thread(exchange, namespace, "replay", "clearing.book", "--yes")
        assert replayed.returncode == 0, replayed.stderr
        assert "1 dead letter(s) sent back" in replayed.stdout
        assert await queue_depth(dead_letter_queue) == 0
        assert await queue_depth(broker.topology.queue_name(book)) == 1
        assert [await queue_depth(name) for name in others] == before
        connection = await aio_pika.connect(env.AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(broker.topology.queue_name(book))
            async with queue.iterator() as deliveries:
                async for message in deliveries:
                    back = Envelope.decode_message(message)
                    await message.ack()
                    break
        assert back == envelopes

        undeclared = await asyncio.to_thread(exchange, f"{namespace}.none", "show", "custody.book")
        assert undeclared.returncode == 2
        assert "not declared" in undeclared.stdout
        unknown = await asyncio.to_thread(exchange, namespace, "show", "no.such.queue")
        assert unknown.returncode == 2
        assert "clearing.book" in unknown.stdout


def test_an_unreachable_broker_is_a_one_line_error() -> None:
    out = exchange("nowhere", "list", EXCHANGE_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")
    assert out.returncode == 2
    assert "RabbitMQ unreachable" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
