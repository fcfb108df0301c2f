"""The shards of a matching process are independent: a command that cannot be applied on
one shard does not hold up another's."""

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts import BOOK_COMMAND, system_queues
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
from tests.support.book_commands import SHARDS, command_broker, command_envelope, publish_all
from tests.support.wait import wait_until


async def test_a_command_that_fails_on_one_shard_does_not_hold_up_another(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    healthy, failing = new_code(0), new_code(1)
    first = [command_envelope(c) for c in command_stream([healthy], 300, seed=12)]
    # Not a UUID: the journal cannot take it, so its transaction fails every time.
    poison = Envelope(
        "not-a-uuid",
        BOOK_COMMAND,
        "test",
        "test-commands",
        1,
        new_order(failing, "p1", "mP", "BUY", 10000, 1),
    )
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
