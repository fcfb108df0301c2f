"""A throw-away schema with an outbox, an inbox and an effects table, for messaging tests."""

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import aio_pika
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import asyncpg_dsn
from shared.driver import DriverPool, Tx
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope
from shared.messaging.outbox import OutboxRelay
from shared.messaging.schema import create_messaging_tables, track_outbox_positions
from shared.messaging.topology import QueueSpec, Topology
from shared.sql import Statement
from tests.support import env

SCHEMA = "msgtest"
QUEUE = QueueSpec("msgtest.work", bindings=("msgtest.#",))


async def run_migration(engine: AsyncEngine, step: Callable[[str], None]) -> None:
    """Run one of the shared migration steps on the msgtest schema."""

    def ddl(conn: Connection) -> None:
        with Operations.context(MigrationContext.configure(conn)):
            step(SCHEMA)

    async with engine.begin() as conn:
        await conn.run_sync(ddl)


async def create_schema(engine: AsyncEngine, *, outbox_positions: bool = True) -> None:
    """The schema as the services' migrations leave it (``outbox_positions=False``: as it
    was before the outbox tracked its streams' positions)."""

    def ddl(conn: Connection) -> None:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        with Operations.context(MigrationContext.configure(conn)):
            create_messaging_tables(SCHEMA)
            if outbox_positions:
                track_outbox_positions(SCHEMA)
        conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.effects (id bigserial PRIMARY KEY, message_id uuid NOT NULL,"
                " type text NOT NULL, payload jsonb NOT NULL)"
            )
        )

    async with engine.begin() as conn:
        await conn.run_sync(ddl)


@contextlib.asynccontextmanager
async def running_broker(
    namespace: str, queues: Sequence[QueueSpec], *, name: str, delivery_limit: int = 3
) -> AsyncIterator[Broker]:
    """A broker connection with these queues declared and emptied (their dead-letter
    queues too), closed afterwards."""
    topology = Topology(namespace, delivery_limit)
    broker = Broker(env.AMQP_URL, topology, connection_name=name, prefetch=50, queues=queues)
    broker.start()
    try:
        await broker.wait_connected(timeout=20)
        connection = await aio_pika.connect(env.AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for spec in queues:
                for queue_name in (
                    topology.queue_name(spec),
                    topology.dead_letter_queue_name(spec),
                ):
                    await (await channel.get_queue(queue_name)).purge()
        yield broker
    finally:
        await broker.close()


async def publish_all(broker: Broker) -> list[int]:
    """Run a relay until the msgtest outbox is empty; the size of each batch it published."""
    relay = OutboxRelay(SCHEMA, broker, database_url=env.DATABASE_URL)
    try:
        counts = [await relay.publish_batch()]
        while counts[-1]:
            counts.append(await relay.publish_batch())
        return counts
    finally:
        await relay.close()


async def take_all(broker: Broker, queue: QueueSpec = QUEUE) -> list[Envelope]:
    """Every envelope waiting in a queue, in queue order (taken off it)."""
    envelopes: list[Envelope] = []
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(broker.topology.queue_name(queue))
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            envelopes.extend(Envelope.decode_message(message))
    return envelopes


class PoisonError(RuntimeError):
    pass


_RECORD_EFFECT = Statement(
    f"INSERT INTO {SCHEMA}.effects (message_id, type, payload) "
    "VALUES (CAST(:m AS uuid), :t, CAST(:p AS jsonb))"
)


async def record_effect(session: Tx, envelope: Envelope) -> None:
    """The handler under test: one row per applied message; 'poison' messages always fail.
    It runs in a session's transaction or a driver transaction alike."""
    if envelope.payload.get("poison"):
        raise PoisonError(f"message {envelope.message_id} always fails")
    await _RECORD_EFFECT.execute(
        session, m=envelope.message_id, t=envelope.type, p=envelope.encode().decode()
    )


#: How a test consumer runs its transactions: on SQLAlchemy sessions, or on the driver.
TRANSACTION_KINDS = ("session", "driver")


def driver_pool(database_url: str, kind: str) -> DriverPool | None:
    if kind == "session":
        return None
    return DriverPool(asyncpg_dsn(database_url), max_connections=2, application_name="msgtest")


async def effect_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT message_id::text, count(*) FROM {SCHEMA}.effects GROUP BY 1")
        )
        return {r[0]: r[1] for r in rows}
