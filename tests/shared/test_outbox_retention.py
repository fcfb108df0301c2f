"""Pruning published outbox rows past the retention (OutboxPruner), against real
PostgreSQL and RabbitMQ."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_session_factory
from shared.messaging.broker import Broker
from shared.messaging.outbox import Draft, Outbox, unpublished_count_sql
from shared.messaging.retention import OutboxPruner
from shared.messaging.topology import QueueSpec
from tests.support import env
from tests.support.msgtest import SCHEMA, publish_all, running_broker, take_all

QUEUE = QueueSpec("retentiontest.work", bindings=("retentiontest.#",))
DAY = 86_400.0


@pytest.fixture
async def broker(broker_namespace: str) -> AsyncIterator[Broker]:
    async with running_broker(broker_namespace, [QUEUE], name="retentiontest") as broker:
        yield broker


async def drain(broker: Broker) -> list[tuple[str, int]]:
    return [(e.stream, e.sequence) for e in await take_all(broker, QUEUE)]


async def write(engine: AsyncEngine, stream: str, count: int) -> None:
    outbox = Outbox(SCHEMA, producer="retentiontest")
    drafts = [Draft("retentiontest.happened", "retentiontest.happened", {}) for _ in range(count)]
    async with make_session_factory(engine)() as session, session.begin():
        await outbox.add(session, drafts, stream=stream)


async def age(engine: AsyncEngine, days: float, where: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"UPDATE {SCHEMA}.outbox SET created_at = now() - make_interval(days => :d) "
                f"WHERE {where}"
            ),
            {"d": days},
        )


async def remaining(engine: AsyncEngine) -> set[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT stream, sequence FROM {SCHEMA}.outbox"))
        return {(r.stream, r.sequence) for r in rows}


def pruner(chunk: int) -> OutboxPruner:
    return OutboxPruner(
        SCHEMA,
        database_url=env.DATABASE_URL,
        retention_seconds=DAY,
        interval_seconds=3600,
        chunk=chunk,
    )


@pytest.mark.parametrize("chunk", [2, 5000])
async def test_published_rows_past_the_retention_go_and_everything_else_stays(
    msg_engine: AsyncEngine, broker: Broker, chunk: int
) -> None:
    """Published and old: deleted. Unpublished (however old) or young: kept; the kept
    unpublished rows are still published afterwards, in order."""
    await write(msg_engine, "A", 5)
    await write(msg_engine, "B", 3)
    await publish_all(broker)
    await write(msg_engine, "A", 2)  # A 6-7: not published yet
    await age(msg_engine, 2, "true")
    await write(msg_engine, "C", 1)  # young and unpublished

    prunes = pruner(chunk)
    assert await prunes.prune() == 8
    assert await remaining(msg_engine) == {("A", 6), ("A", 7), ("C", 1)}
    assert await prunes.prune() == 0

    await drain(broker)
    await publish_all(broker)
    async with msg_engine.connect() as conn:
        assert await conn.scalar(text(unpublished_count_sql(SCHEMA))) == 0
    assert sorted(await drain(broker)) == [("A", 6), ("A", 7), ("C", 1)]
    # Published now, and old: the next run (starting past what is gone) takes them.
    assert await prunes.prune() == 2
    assert await remaining(msg_engine) == {("C", 1)}

    # The streams go on numbering after the pruned rows.
    await write(msg_engine, "A", 1)
    assert ("A", 8) in await remaining(msg_engine)


async def test_a_young_row_ends_the_walk(msg_engine: AsyncEngine, broker: Broker) -> None:
    """The walk stops at the first chunk holding a row younger than the cutoff: rows after
    it wait for a later run even when old (created_at set back by hand here; in service
    ids follow time)."""
    await write(msg_engine, "A", 6)
    await publish_all(broker)
    await age(msg_engine, 2, "sequence IN (1, 2, 5, 6)")

    prunes = pruner(chunk=2)
    assert await prunes.prune() == 2
    assert await remaining(msg_engine) == {("A", 3), ("A", 4), ("A", 5), ("A", 6)}
    await age(msg_engine, 2, "sequence IN (3, 4)")
    assert await prunes.prune() == 4
    assert await remaining(msg_engine) == set()
