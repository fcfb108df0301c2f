"""Custody as a running service on real RabbitMQ: `order.submit` in, reservation made and
`book.command` out on the shard queue; `book.events` in, obligations and releases made;
redelivered and duplicated messages change nothing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody.app import create_runtime
from services.custody.settings import CustodySettings
from shared.contracts import (
    BOOK_EVENTS,
    ORDER_SUBMIT,
    book_routing_key,
    book_stream,
    shard_of,
    shard_routing_key,
)
from shared.ids import new_id, uuid7
from shared.messaging.broker import OutgoingMessage
from shared.messaging.envelope import Envelope
from shared.runtime import ServiceRuntime
from tests.custody.helpers import (
    allocate,
    assert_ledger_ok,
    cash_fen,
    deposit,
    new_member,
    new_product,
    past_date,
    trade_event,
    units,
)
from tests.support import env
from tests.support.broker_admin import delete_broker_namespace
from tests.support.wait import wait_until

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def custody(
    settings: CustodySettings, broker_namespace: str
) -> AsyncIterator[ServiceRuntime]:
    """A custody runtime on a broker namespace of its own: messages other suites' services
    left in this run's queues (book events of their orders, say) must not reach it."""
    own = settings.model_copy(
        update={"broker_prefix": f"{broker_namespace}.custody{secrets.token_hex(3)}"}
    )
    runtime = create_runtime(own)
    await runtime.start()
    await runtime.broker.wait_connected(timeout=20)
    yield runtime
    await runtime.stop()
    await delete_broker_namespace(own.broker_prefix)


async def publish(runtime: ServiceRuntime, routing_key: str, envelope: Envelope) -> None:
    await runtime.broker.publish([OutgoingMessage.from_envelope(routing_key, envelope)])


def envelope(
    kind: str, payload: dict[str, Any], stream: str, sequence: int, message_id: str | None = None
) -> Envelope:
    return Envelope(
        message_id=message_id or str(uuid7()),
        type=kind,
        producer="test",
        stream=stream,
        sequence=sequence,
        payload=payload,
    )


async def find_on_queue(queue_name: str, order_id: str) -> dict[str, Any]:
    """Consume a queue until the message about this order turns up (single-active-consumer
    queues allow no basic.get)."""
    found: dict[str, Any] = {}
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            payload = orjson.loads(message.body)["payload"]
            if payload.get("order_id") == order_id:
                found.update(payload)
            await message.ack()

        tag = await queue.consume(on_message)

        async def arrived() -> bool:
            return bool(found)

        try:
            await wait_until(arrived, message=f"book.command for {order_id} on {queue_name}")
        finally:
            await queue.cancel(tag)
    return found


async def test_orders_and_book_events_through_a_running_custody(
    custody: ServiceRuntime, factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    code = await new_product(factory, settings)
    buyer, seller = await new_member(factory, settings), await new_member(factory, settings)
    await deposit(factory, buyer, 3000_00)
    await allocate(factory, code, seller, 50)
    stream = f"gateway-test-{new_id('s')}"

    def order(side: str, member: str, price: int) -> dict[str, Any]:
        order_id = new_id("o")
        return {
            "order_id": order_id,
            "client_order_id": order_id,
            "partner_id": "p_test",
            "member_id": member,
            "instrument": code,
            "side": side,
            "price_fen": price,
            "quantity": 20,
            "time_in_force": "GTC",
        }

    buy, sell = order("BUY", buyer, 101_00), order("SELL", seller, 100_00)
    submit_buy = envelope(ORDER_SUBMIT, buy, stream, 1)
    await publish(custody, ORDER_SUBMIT, submit_buy)
    await publish(custody, ORDER_SUBMIT, submit_buy)  # redelivered
    await publish(custody, ORDER_SUBMIT, envelope(ORDER_SUBMIT, sell, stream, 2))

    async def reserved() -> bool:
        return (await cash_fen(factory, buyer))["held"] > 0 and (
            await units(factory, seller, code)
        )["held"] > 0

    await wait_until(reserved, message="both reservations")
    assert (await cash_fen(factory, buyer))["held"] == 101_00 * 20 + 500
    shard_queue = f"{custody.settings.broker_prefix}.{shard_routing_key(shard_of(code, settings.matching_shards))}"
    command = await find_on_queue(shard_queue, buy["order_id"])
    assert command == {
        "command": "new",
        "instrument": code,
        "order_id": buy["order_id"],
        "member_id": buyer,
        "side": "BUY",
        "price_fen": 101_00,
        "quantity": 20,
        "tif": "GTC",
    }

    day = past_date()
    trade = trade_event(
        3, buy["order_id"], sell["order_id"], buyer, seller, 100_00, 20, day, taker_side="SELL"
    )
    events = envelope(BOOK_EVENTS, {"instrument": code, "events": [trade]}, book_stream(code), 1)
    await publish(custody, book_routing_key(code), events)
    await publish(custody, book_routing_key(code), events)  # redelivered: same message id
    again = envelope(BOOK_EVENTS, {"instrument": code, "events": [trade]}, book_stream(code), 2)
    await publish(custody, book_routing_key(code), again)  # the same trade in another message
    marker = envelope(
        BOOK_EVENTS,
        {
            "instrument": code,
            "events": [
                {
                    "type": "OrderFilled",
                    "seq": 4,
                    "order_id": buy["order_id"],
                    "filled_quantity": 20,
                    "remaining_quantity": 0,
                    "status": "FILLED",
                },
                {
                    "type": "OrderFilled",
                    "seq": 5,
                    "order_id": sell["order_id"],
                    "filled_quantity": 20,
                    "remaining_quantity": 0,
                    "status": "FILLED",
                },
            ],
        },
        book_stream(code),
        3,
    )
    await publish(custody, book_routing_key(code), marker)

    async def closed() -> bool:
        async with engine.connect() as conn:
            status = await conn.scalar(
                text("SELECT status FROM custody.reservations WHERE order_id = :o"),
                {"o": sell["order_id"]},
            )
        return status == "closed"

    await wait_until(closed, message="the fills applied")
    # 2,000.00 at 100.00 (the buyer's 101.00 limit improved), fee 2.00 each side, once
    assert await cash_fen(factory, buyer) == {
        "settled": 3000_00,
        "held": 0,
        "pending_in": 0,
        "pending_out": 2000_00 + 200,
        "available": 3000_00 - 2002_00,
    }
    assert (await cash_fen(factory, seller))["pending_in"] == 2000_00 - 200
    assert (await units(factory, buyer, code))["pending_in"] == 20
    assert await units(factory, seller, code) == {
        "settled": 50,
        "held": 0,
        "pending_in": 0,
        "pending_out": 20,
        "available": 30,
    }
    async with engine.connect() as conn:
        # Applied in order: the commands' position covers it (its id need not be recorded).
        position = await conn.scalar(
            text(
                "SELECT contiguous_upto FROM custody.inbox_stream "
                "WHERE consumer = 'custody.commands' AND stream = :s"
            ),
            {"s": submit_buy.stream},
        )
    assert position is not None
    assert position >= submit_buy.sequence
    await assert_ledger_ok(engine)
