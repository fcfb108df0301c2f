"""Driver transactions (``shared.driver``) against the real PostgreSQL and RabbitMQ: what they
commit, what their statements read, and which messages a consumer gives them."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import asyncpg_dsn, make_session_factory, transaction_info
from shared.driver import DriverPool, DriverTransaction, Tx, after_commit, orm_session
from shared.ids import uuid7
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import InboxConsumer
from shared.sql import Statement
from tests.support.msgtest import QUEUE, SCHEMA, effect_counts, record_effect, running_broker
from tests.support.wait import wait_until

INSERT = Statement("INSERT INTO drivertest (k) VALUES (:k)")
VALUES = Statement(
    "SELECT CAST(:j AS json) AS j, CAST(:b AS jsonb) AS b, CAST(:b AS jsonb) -> 'n' AS n"
)


@pytest.fixture
async def pool(engine: AsyncEngine) -> AsyncIterator[DriverPool]:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS drivertest (k text)"))
    pool = DriverPool(
        asyncpg_dsn(engine.url.render_as_string(hide_password=False)),
        max_connections=2,
        application_name="drivertest",
    )
    yield pool
    await pool.close()


async def keys(engine: AsyncEngine, key: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM drivertest WHERE k = :k"), {"k": key})
        return int(found.scalar_one())


async def test_after_commit_runs_once_committed_and_never_on_rollback(
    pool: DriverPool, engine: AsyncEngine
) -> None:
    calls: list[str] = []
    kept, dropped = str(uuid7()), str(uuid7())
    async with pool.transaction() as tx:
        await INSERT.execute(tx, k=kept)
        after_commit(tx, lambda: calls.append("kept"))
        transaction_info(tx)["note"] = 1
        assert calls == []
    assert calls == ["kept"]

    async def write_then_fail() -> None:
        async with pool.transaction() as tx:
            await INSERT.execute(tx, k=dropped)
            after_commit(tx, lambda: calls.append("dropped"))
            assert "note" not in transaction_info(tx)  # a transaction's own state
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        await write_then_fail()
    assert calls == ["kept"]
    assert await keys(engine, kept) == 1
    assert await keys(engine, dropped) == 0


async def test_after_commit_on_a_session_runs_once_committed(engine: AsyncEngine) -> None:
    calls: list[int] = []
    async with make_session_factory(engine)() as session, session.begin():
        after_commit(session, lambda: calls.append(1))
        assert calls == []
    assert calls == [1]


async def test_json_reads_the_same_on_the_driver_as_on_a_session(
    pool: DriverPool, engine: AsyncEngine
) -> None:
    document = '{"n": 12345678901234567890, "x": 1.5, "s": "中文 \\u00e9", "l": [1, null, true]}'
    async with pool.transaction() as tx:
        on_driver = dict((await VALUES.fetch(tx, j=document, b=document))[0])
    async with make_session_factory(engine)() as session, session.begin():
        on_session = dict((await VALUES.fetch(session, j=document, b=document))[0])
    assert on_driver == on_session
    assert on_driver["b"]["n"] == 12345678901234567890
    assert on_driver["j"]["s"] == "中文 é"


def test_a_driver_transaction_has_no_orm_session() -> None:
    with pytest.raises(TypeError):
        orm_session(DriverTransaction(connection=None))


def envelope(kind: str) -> Envelope:
    return Envelope(
        message_id=str(uuid7()),
        type=kind,
        producer="msgtest",
        stream=f"driver-{kind}",
        sequence=1,
        payload={},
    )


async def test_a_consumer_applies_on_the_driver_unless_a_message_needs_a_session(
    msg_engine: AsyncEngine, broker_namespace: str, pool: DriverPool
) -> None:
    ran_on: dict[str, str] = {}

    async def handler(tx: Tx, message: Envelope) -> None:
        if message.type == "msgtest.orm":
            await orm_session(tx).execute(text("SELECT 1"))
        ran_on[message.message_id] = "session" if isinstance(tx, AsyncSession) else "driver"
        await record_effect(tx, message)

    plain, orm = envelope("msgtest.plain"), envelope("msgtest.orm")
    consumer = InboxConsumer(
        name="drivertest",
        queue=QUEUE,
        schema=SCHEMA,
        session_factory=make_session_factory(msg_engine),
        handler=handler,
        driver=pool,
        needs_session=lambda e: e.type == "msgtest.orm",
    )
    async with running_broker(broker_namespace, [QUEUE], name="drivertest") as broker:
        await consumer.start(broker)
        try:
            await publish_one(broker, plain)

            async def applied(count: int) -> bool:
                return len(await effect_counts(msg_engine)) == count

            await wait_until(lambda: applied(1), message="the plain message applied")
            await publish_one(broker, orm)
            await wait_until(lambda: applied(2), message="the orm message applied")
        finally:
            await consumer.stop()
    expected: dict[str, Any] = {plain.message_id: "driver", orm.message_id: "session"}
    assert ran_on == expected
    assert await effect_counts(msg_engine) == {plain.message_id: 1, orm.message_id: 1}


async def publish_one(broker: Broker, message: Envelope) -> None:
    await broker.publish([OutgoingMessage.from_envelope(message.type, message)])
