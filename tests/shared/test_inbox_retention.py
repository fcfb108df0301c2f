"""Pruning inbox records past the retention (InboxPruner), and recognising a redelivery
by its stream's position when no record of its id is left, against real PostgreSQL and
RabbitMQ."""

from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_session_factory
from shared.ids import uuid7
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import Inbox, InboxConsumer
from shared.messaging.outbox import Draft, Outbox
from shared.messaging.retention import InboxPruner
from tests.support import env
from tests.support.msgtest import (
    QUEUE,
    SCHEMA,
    TRANSACTION_KINDS,
    driver_pool,
    effect_counts,
    publish_all,
    record_effect,
    running_broker,
)
from tests.support.wait import wait_until

DAY = 86_400.0


@pytest.fixture
async def broker(broker_namespace: str) -> AsyncIterator[Broker]:
    async with running_broker(broker_namespace, [QUEUE], name="inboxretention") as broker:
        yield broker


def pruner(chunk: int = 5000) -> InboxPruner:
    return InboxPruner(
        SCHEMA,
        database_url=env.DATABASE_URL,
        retention_seconds=DAY,
        interval_seconds=3600,
        chunk=chunk,
    )


def envelope(stream: str, sequence: int) -> Envelope:
    return Envelope(str(uuid7()), "t", "p", stream, sequence, {})


async def record(engine: AsyncEngine, consumer: str, envelopes: Sequence[Envelope]) -> list[bool]:
    async with make_session_factory(engine)() as session, session.begin():
        return await Inbox(SCHEMA, consumer).record_many(session, envelopes)


async def record_one_by_one(
    engine: AsyncEngine, consumer: str, envelopes: Sequence[Envelope]
) -> list[bool]:
    inbox = Inbox(SCHEMA, consumer)
    async with make_session_factory(engine)() as session, session.begin():
        return [await inbox.record(session, e) for e in envelopes]


async def age(engine: AsyncEngine, days: float, where: str = "true") -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"UPDATE {SCHEMA}.inbox SET received_at = now() - make_interval(days => :d) "
                f"WHERE {where}"
            ),
            {"d": days},
        )


async def records(engine: AsyncEngine) -> set[tuple[str, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT consumer, stream, sequence FROM {SCHEMA}.inbox"))
        return {(r.consumer, r.stream, r.sequence) for r in rows}


@pytest.mark.parametrize("chunk", [2, 5000])
async def test_covered_records_past_the_retention_go_and_the_rest_stay(
    msg_engine: AsyncEngine, chunk: int
) -> None:
    """Old and at or below the stream's position: deleted. Above a gap (however old) or
    young: kept. Each consumer by its own positions. (A consumer records the ids of a
    stream's first messages and of messages that arrive past a gap or while one is open;
    later messages arriving in order only move the position, so the records here are made
    by sending out of order.)"""
    one, two = "one", "two"
    a = [envelope("A", s) for s in range(1, 6)]
    b = [envelope("B", s) for s in (1, 2, 4)]  # B 3 missing
    assert await record(msg_engine, one, [*a[2:], b[1], b[2]]) == [True] * 5
    assert await record(msg_engine, one, [a[0], a[1], b[0]]) == [True] * 3
    assert await record(msg_engine, two, [a[2]]) == [True]  # two's A 2 missing
    assert await record(msg_engine, two, [a[0]]) == [True]
    assert len(await records(msg_engine)) == 10
    await age(msg_engine, 2)
    a6, a7 = envelope("A", 6), envelope("A", 7)
    assert await record(msg_engine, one, [a7]) == [True]  # young
    assert await record(msg_engine, one, [a6]) == [True]

    prunes = pruner(chunk)
    assert await prunes.prune() == 8  # one's A 1-5 and B 1-2, two's A 1
    assert await records(msg_engine) == {
        (one, "B", 4),
        (one, "A", 6),
        (one, "A", 7),
        (two, "A", 3),
    }
    assert await prunes.prune() == 0

    # The gap closes and everything is old: the next run takes what was kept.
    b3 = envelope("B", 3)
    assert await record(msg_engine, one, [b3]) == [True]
    await age(msg_engine, 2)
    assert await prunes.prune() == 4  # one's B 3, B 4, A 6 and A 7; two's A 3 is above its gap
    assert await records(msg_engine) == {(two, "A", 3)}


async def test_a_message_whose_record_is_pruned_is_still_a_duplicate(
    msg_engine: AsyncEngine,
) -> None:
    """With its record gone, a message at or below its stream's position is recognised by
    its sequence, in a batch and alone; a new message after it is applied."""
    consumer = "dup"
    first = [envelope("A", s) for s in range(1, 5)]
    assert await record(msg_engine, consumer, first[1:]) == [True] * 3  # past a gap
    assert await record(msg_engine, consumer, first[:1]) == [True]
    await age(msg_engine, 2)
    assert await pruner().prune() == 4
    assert await records(msg_engine) == set()

    a5 = envelope("A", 5)
    assert await record(msg_engine, consumer, [first[1], a5, first[3]]) == [False, True, False]
    assert await record_one_by_one(msg_engine, consumer, first) == [False] * 4
    async with make_session_factory(msg_engine)() as session:
        inbox = Inbox(SCHEMA, consumer)
        assert await inbox.position(session, "A") == 5
        assert await inbox.gaps(session) == []


@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_messages_redelivered_with_no_record_of_their_ids_change_nothing(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    """Through the broker: six messages applied in order (only those of the stream's first
    batch have their ids recorded, and the pruner deletes them), then all six published
    again (a relay that lost its positions): the consumer acknowledges each as a duplicate
    by its stream's position and no effect happens twice."""
    outbox = Outbox(SCHEMA, producer="msgtest")
    async with make_session_factory(msg_engine)() as session, session.begin():
        written = await outbox.add(
            session, [Draft("msgtest.happened", "msgtest.happened", {"n": i}) for i in range(6)]
        )
    await publish_all(broker)
    pool = driver_pool(env.DATABASE_URL, kind)
    name = f"pruned-{kind}"
    consumer = InboxConsumer(
        name=name,
        queue=QUEUE,
        schema=SCHEMA,
        session_factory=make_session_factory(msg_engine),
        handler=record_effect,
        driver=pool,
    )
    duplicates_before = (
        REGISTRY.get_sample_value("exchange_messages_duplicate_total", {"consumer": name}) or 0
    )
    await consumer.start(broker)
    try:

        async def applied() -> bool:
            return len(await effect_counts(msg_engine)) == len(written)

        await wait_until(applied, message="six effects")
        first_batch = await records(msg_engine)
        assert 1 <= len(first_batch) <= len(written)
        await age(msg_engine, 2)
        assert await pruner().prune() == len(first_batch)
        assert await records(msg_engine) == set()

        async with msg_engine.begin() as conn:  # what a lost position makes the relay do
            await conn.execute(text(f"DELETE FROM {SCHEMA}.outbox_published"))
        await publish_all(broker)

        async def dropped() -> bool:
            value = REGISTRY.get_sample_value(
                "exchange_messages_duplicate_total", {"consumer": name}
            )
            return (value or 0) - duplicates_before == len(written)

        await wait_until(dropped, message="six duplicates acknowledged")
    finally:
        await consumer.stop()
        if pool is not None:
            await pool.close()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in written}
    assert await records(msg_engine) == set()
