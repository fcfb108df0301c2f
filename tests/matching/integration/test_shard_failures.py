"""How a matching shard meets failures: a command it can never journal is dead-lettered
alone, without holding up the rest of its shard or the other shard; a transient fault (a
refused commit, a killed connection) is waited out with every command kept in order."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import BOOK_COMMAND, system_queues
from shared.messaging.broker import bundle
from shared.messaging.dead_letters import peek
from shared.messaging.envelope import Envelope
from shared.messaging.topology import Topology
from tests.matching.integration.test_matching_service import (
    command_stream,
    journal_count,
    listing,
    matching_process,
    new_code,
    new_order,
)
from tests.support import env
from tests.support.book_commands import (
    SHARDS,
    command_broker,
    command_envelope,
    command_message,
    publish_all,
)
from tests.support.refusals import refused_inserts
from tests.support.services import ServiceProcess, metric_total
from tests.support.wait import wait_until


def unjournalable(message_id: str, command: dict[str, Any]) -> Envelope:
    """A book command whose id is not a UUID: the journal cannot take it, so every
    transaction that holds it fails."""
    return Envelope(message_id, BOOK_COMMAND, "test", "test-commands", 1, command)


async def test_a_command_that_fails_on_one_shard_does_not_hold_up_another(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    healthy, failing = new_code(0), new_code(1)
    first = [command_envelope(c) for c in command_stream([healthy], 300, seed=12)]
    poison = unjournalable("not-a-uuid", new_order(failing, "p1", "mP", "BUY", 10000, 1))
    service = matching_process()
    async with command_broker(broker_namespace) as broker:
        await publish_all(broker, [poison, *first])  # both waiting when the service starts
    await service.start()
    try:
        first_ids = [e.message_id for e in first]

        async def healthy_applied() -> bool:
            return await journal_count(engine, first_ids) == len(first_ids)

        await wait_until(healthy_applied, timeout=60, message="the healthy shard's commands")
        spec = next(q for q in system_queues(SHARDS) if q.name == "matching.shard.1")

        async def poison_dead_lettered() -> bool:
            letters = await peek(env.AMQP_URL, Topology(broker_namespace), spec, 1000)
            return any(e["message_id"] == "not-a-uuid" for d in letters for e in d.envelopes)

        await wait_until(poison_dead_lettered, timeout=60, message="the poison dead-lettered")
        # The failing shard goes on with the commands after it.
        after = [command_envelope(listing(failing))]
        async with command_broker(broker_namespace) as broker:
            await publish_all(broker, after)

        async def failing_shard_recovered() -> bool:
            return await journal_count(engine, [after[0].message_id]) == 1

        await wait_until(failing_shard_recovered, timeout=60, message="the shard's next command")
        assert await journal_count(engine, first_ids) == len(first_ids)
    finally:
        await service.stop()


async def journal_order(engine: AsyncEngine, ids: list[str]) -> list[str]:
    """Those of ``ids`` in the journal, in the order the shard applied them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT message_id::text FROM matching.journal "
                "WHERE message_id = ANY(CAST(:ids AS uuid[])) ORDER BY shard, seq"
            ),
            {"ids": ids},
        )
        return [m for (m,) in rows]


async def wait_journaled_in_order(engine: AsyncEngine, ids: list[str]) -> None:
    """Wait until every one of ``ids`` is in the journal, and check they are in that order."""

    async def applied() -> bool:
        return await journal_count(engine, ids) == len(ids)

    await wait_until(applied, timeout=60, message="every command but the poison")
    assert await journal_order(engine, ids) == ids


async def dead_lettered_ids(broker_namespace: str, shard: int) -> set[str]:
    spec = next(q for q in system_queues(SHARDS) if q.name == f"matching.shard.{shard}")
    letters = await peek(env.AMQP_URL, Topology(broker_namespace), spec, 10_000)
    return {e["message_id"] for d in letters for e in d.envelopes}


async def test_a_failing_command_is_dead_lettered_alone_and_the_rest_keep_their_order(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    code = new_code(0)
    commands = [command_envelope(c) for c in command_stream([code], 200, seed=13)]
    poison = unjournalable("also-not-a-uuid", listing(code))
    sent = [*commands[:100], poison, *commands[100:]]
    service = matching_process()  # batches of up to 100 deliveries
    async with command_broker(broker_namespace) as broker:
        await publish_all(broker, sent)  # a backlog: the poison arrives among others
    await service.start()
    try:
        ids = [e.message_id for e in commands]
        await wait_journaled_in_order(engine, ids)
        dead = await dead_lettered_ids(broker_namespace, 0)
        assert "also-not-a-uuid" in dead
        assert not dead & set(ids), "a command sent with the poison was dead-lettered"
    finally:
        await service.stop()


async def test_the_healthy_commands_of_a_bundle_with_a_poison_are_applied_in_order(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    """A bundle (one AMQP message of several commands, as custody's relay sends them) with
    a command in it that can never be journaled: the bundle is dead-lettered, but its other
    commands are journaled first, in order, and so are the commands sent after it."""
    code = new_code(0)
    commands = [command_envelope(c) for c in command_stream([code], 40, seed=14)]
    poison = unjournalable("not-a-uuid-either", listing(code))
    in_bundle, after = [*commands[:10], poison, *commands[10:20]], commands[20:]
    async with command_broker(broker_namespace) as broker:
        packed = bundle([command_message(e) for e in in_bundle], max_size=100)
        assert len(packed) == 1
        await broker.publish(packed)
        await publish_all(broker, after)
    service = matching_process()
    await service.start()
    try:
        ids = [e.message_id for e in commands]
        await wait_journaled_in_order(engine, ids)

        async def bundle_dead_lettered() -> bool:
            return "not-a-uuid-either" in await dead_lettered_ids(broker_namespace, 0)

        await wait_until(bundle_dead_lettered, timeout=60, message="the bundle dead-lettered")
    finally:
        await service.stop()


async def test_commands_wait_out_a_transient_fault_in_their_order(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    """While every commit of the journal fails with a serialization failure (a fault a
    retry gets past), commands pile up; once it clears, all are applied in the order they
    were sent: none returned to the queue behind later ones, none dead-lettered."""
    code = new_code(1)
    commands = [command_envelope(c) for c in command_stream([code], 400, seed=14)]
    ids = [e.message_id for e in commands]
    service = matching_process()
    await service.start()
    try:
        async with (
            refused_inserts(engine, "matching.journal", sqlstate="40001") as refusals,
            command_broker(broker_namespace) as broker,
        ):
            await publish_all(broker, commands[:200])

            # More failed commits than the queue's delivery limit (5) would allow a
            # message returned to the queue each time.
            async def refused_often() -> bool:
                return await refusals.count() >= 8

            await wait_until(refused_often, timeout=60, message="commits refused")
            await publish_all(broker, commands[200:])
            await refusals.lift()

            async def applied() -> bool:
                return await journal_count(engine, ids) == len(ids)

            await wait_until(applied, timeout=60, message="every command, once the fault cleared")
        assert await journal_order(engine, ids) == ids
        assert not await dead_lettered_ids(broker_namespace, 1) & set(ids)
    finally:
        await service.stop()


async def commit_failures(service: ServiceProcess) -> int:
    return await metric_total(service, "exchange_matching_commit_failures_total")


async def terminate_backends(engine: AsyncEngine, application_name: str) -> int:
    async with engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": application_name},
        )
    return int(killed or 0)


async def test_commands_survive_their_database_connections_being_killed(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    """The shard's connections are terminated while it works: the commit in flight fails
    as a transient fault and is retried on a new connection. Every command is applied
    once, in the order sent, and none is dead-lettered."""
    code = new_code(0)
    stream = [command_envelope(c) for c in command_stream([code], 6000, seed=15)]
    sent: list[Envelope] = []
    service = matching_process()

    await service.start()
    try:
        async with command_broker(broker_namespace) as broker:
            # A kill cuts a commit off only if it lands in one: go on until three have.
            while await commit_failures(service) < 3:
                assert len(sent) < len(stream), "no kill landed in a commit"
                chunk = stream[len(sent) : len(sent) + 200]
                sent += chunk
                await publish_all(broker, chunk)
                first = [chunk[0].message_id]

                async def started(first: list[str] = first) -> bool:
                    return await journal_count(engine, first) == 1

                await wait_until(started, timeout=60, message="the shard at work")
                await terminate_backends(engine, "matching-driver")
            ids = [e.message_id for e in sent]

            async def applied() -> bool:
                return await journal_count(engine, ids) == len(ids)

            await wait_until(applied, timeout=120, message="every command")
        assert await journal_order(engine, ids) == ids
        assert not await dead_lettered_ids(broker_namespace, 0) & set(ids)
    finally:
        await service.stop()
