"""A consumer group's cycle (ConsumerGroup) and a lingering consumer, against real
PostgreSQL and RabbitMQ."""

import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import make_session_factory
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import ConsumerGroup, Handler, InboxConsumer
from shared.messaging.outbox import Draft, Outbox
from shared.messaging.topology import QueueSpec
from tests.support import env
from tests.support.broker_admin import queue_depth
from tests.support.msgtest import SCHEMA, publish_all, running_broker
from tests.support.wait import wait_until

EAGER = QueueSpec("grouptest.eager", bindings=("grouptest.eager",))
LATE = QueueSpec("grouptest.late", bindings=("grouptest.late",))


@pytest.fixture
async def group_engine(msg_engine: AsyncEngine) -> AsyncEngine:
    async with msg_engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.group_effects (consumer text NOT NULL, n int NOT NULL,"
                " xid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
                " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
    return msg_engine


@pytest.fixture
async def broker(broker_namespace: str) -> AsyncIterator[Broker]:
    async with running_broker(broker_namespace, [EAGER, LATE], name="grouptest") as broker:
        yield broker


def effect_of(consumer: str) -> Handler:
    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        await session.execute(
            text(f"INSERT INTO {SCHEMA}.group_effects (consumer, n) VALUES (:c, :n)"),
            {"c": consumer, "n": envelope.payload["n"]},
        )

    return handle


def group_of(engine: AsyncEngine) -> ConsumerGroup:
    factory = make_session_factory(engine)
    first = InboxConsumer(
        name="eager",
        queue=EAGER,
        schema=SCHEMA,
        session_factory=factory,
        handler=effect_of("eager"),
    )
    second = InboxConsumer(
        name="late", queue=LATE, schema=SCHEMA, session_factory=factory, handler=effect_of("late")
    )
    return ConsumerGroup(name="grouptest", consumers=[first, second])


async def send(
    engine: AsyncEngine, broker: Broker, routing_key: str, count: int, first: int = 0
) -> None:
    """Write messages ``first``.. to the outbox and publish them (as one delivery)."""
    async with make_session_factory(engine)() as session, session.begin():
        await Outbox(SCHEMA, producer="grouptest").add(
            session,
            [
                Draft("grouptest.happened", routing_key, {"n": i})
                for i in range(first, first + count)
            ],
        )
    await publish_all(broker)


async def effects(engine: AsyncEngine) -> list[tuple[str, int, int, float]]:
    """(consumer, n, transaction id, applied at as epoch seconds) of every effect."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT consumer, n, xid::text::bigint, extract(epoch FROM applied_at) "
                f"FROM {SCHEMA}.group_effects ORDER BY consumer, n"
            )
        )
        return [(r[0], r[1], r[2], float(r[3])) for r in rows]


async def test_a_group_applies_each_part_of_a_cycle_in_its_own_transaction_in_order(
    group_engine: AsyncEngine, broker: Broker
) -> None:
    """One cycle with a delivery for each consumer (the second's received first): the
    group's first consumer commits its part before the second's, in separate transactions,
    and both deliveries are acknowledged."""
    await send(group_engine, broker, "grouptest.late", 1)
    await send(group_engine, broker, "grouptest.eager", 1, first=1)
    group = group_of(group_engine)
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        deliveries = []
        for index, spec in ((1, LATE), (0, EAGER)):
            queue = await channel.get_queue(broker.topology.queue_name(spec))
            message = await queue.get(no_ack=False, timeout=10)
            assert message is not None
            deliveries.append((index, message))
        await group.process(deliveries)
    (eager, _, eager_xid, _), (late, _, late_xid, _) = await effects(group_engine)
    assert (eager, late) == ("eager", "late")
    assert eager_xid < late_xid, "the first consumer's part commits first, on its own"
    for spec in (EAGER, LATE):  # acknowledged: nothing went back to the queue
        assert await queue_depth(broker.topology.queue_name(spec)) == 0


async def test_a_lingering_consumer_alone_applies_what_came_meanwhile_together(
    group_engine: AsyncEngine, broker: Broker
) -> None:
    """An ungrouped consumer with a linger waits that long after a delivery, then applies
    it with whatever came meanwhile in one transaction."""
    linger = 3.0  # the three sends take far less
    consumer = InboxConsumer(
        name="late",
        queue=LATE,
        schema=SCHEMA,
        session_factory=make_session_factory(group_engine),
        handler=effect_of("late"),
        linger_seconds=linger,
    )
    await consumer.start(broker)
    try:
        sent_at = time.time()
        for n in range(3):
            await send(group_engine, broker, "grouptest.late", 1, first=n)

        async def all_applied() -> bool:
            return len(await effects(group_engine)) == 3

        await wait_until(all_applied, timeout=30, message="three messages applied")
    finally:
        await consumer.stop()
    applied = await effects(group_engine)
    assert min(at for _, _, _, at in applied) - sent_at >= linger
    assert len({xid for _, _, xid, _ in applied}) == 1, "one transaction for the three"
