"""Exactly-once effects over at-least-once delivery, against real PostgreSQL and RabbitMQ."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db import asyncpg_dsn, make_session_factory
from shared.driver import DriverPool
from shared.ids import uuid7
from shared.logging import correlation_id_var
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import BUNDLE_CONTENT_TYPE, DEFLATE, Envelope
from shared.messaging.inbox import Inbox, InboxConsumer
from shared.messaging.outbox import Draft, Outbox, OutboxRelay, unpublished_count_sql
from shared.messaging.schema import track_outbox_positions, untrack_outbox_positions
from tests.support import env
from tests.support.broker_admin import queue_depth
from tests.support.msgtest import (
    QUEUE,
    SCHEMA,
    TRANSACTION_KINDS,
    create_schema,
    driver_pool,
    effect_counts,
    publish_all,
    record_effect,
    run_migration,
    running_broker,
    take_all,
)
from tests.support.refusals import refused_inserts
from tests.support.wait import wait_until

HARNESS = Path(__file__).resolve().parents[1] / "support" / "harness.py"
DELIVERY_LIMIT = 3


@pytest.fixture
async def broker(broker_namespace: str) -> AsyncIterator[Broker]:
    async with running_broker(
        broker_namespace, [QUEUE], name="test", delivery_limit=DELIVERY_LIMIT
    ) as broker:
        yield broker


async def write_outbox(engine: AsyncEngine, count: int, **payload: object) -> list[Envelope]:
    outbox = Outbox(SCHEMA, producer="msgtest")
    async with make_session_factory(engine)() as session, session.begin():
        return await outbox.add(
            session,
            [
                Draft("msgtest.happened", "msgtest.happened", {"n": i, **payload})
                for i in range(count)
            ],
        )


def run_harness(
    mode: str, crash_at: str | None = None, kind: str = "session"
) -> subprocess.Popen[bytes]:
    extra = {"EXCHANGE_DELIVERY_LIMIT": str(DELIVERY_LIMIT)}
    if crash_at:
        extra["EXCHANGE_CRASH_AT"] = crash_at
    log_path = Path(tempfile.gettempdir()) / f"harness-{env.RUN_TAG}-{mode}.log"
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, str(HARNESS), mode, kind],
            env=env.service_env(**extra),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
    return code


async def write_stream(engine: AsyncEngine, stream: str, count: int) -> list[Envelope]:
    outbox = Outbox(SCHEMA, producer="msgtest")
    drafts = [Draft("msgtest.happened", "msgtest.happened", {"n": i}) for i in range(count)]
    async with make_session_factory(engine)() as session, session.begin():
        return await outbox.add(session, drafts, stream=stream)


async def published_positions(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT stream, upto FROM {SCHEMA}.outbox_published"))
        return {r.stream: r.upto for r in rows}


_POOLS: list[DriverPool] = []


@pytest.fixture(autouse=True)
async def close_driver_pools() -> AsyncIterator[None]:
    yield
    while _POOLS:
        await _POOLS.pop().close()


async def start_consumer(
    engine: AsyncEngine, broker: Broker, kind: str = "session"
) -> InboxConsumer:
    pool = driver_pool(engine.url.render_as_string(hide_password=False), kind)
    if pool is not None:
        _POOLS.append(pool)
    consumer = InboxConsumer(
        name="harness",
        queue=QUEUE,
        schema=SCHEMA,
        session_factory=make_session_factory(engine),
        handler=record_effect,
        driver=pool,
    )
    await consumer.start(broker)
    return consumer


async def test_outbox_messages_reach_the_consumer_once_in_order(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    envelopes = await write_outbox(msg_engine, 50)
    assert [e.sequence for e in envelopes] == list(range(1, 51))
    assert await publish_all(broker) == [50, 0]
    consumer = await start_consumer(msg_engine, broker)
    try:

        async def all_applied() -> bool:
            return len(await effect_counts(msg_engine)) == 50

        await wait_until(all_applied, message="50 effects")
        counts = await effect_counts(msg_engine)
        assert set(counts) == {e.message_id for e in envelopes}
        assert set(counts.values()) == {1}
        async with make_session_factory(msg_engine)() as session:
            inbox = Inbox(SCHEMA, "harness")
            assert await inbox.position(session, "msgtest") == 50
            assert await inbox.gaps(session) == []
    finally:
        await consumer.stop()


async def test_only_the_relay_holding_the_lock_publishes(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """Another relay mid-batch (holding the schema's relay lock) keeps this one from
    publishing anything; once that relay's connection is gone, this one publishes it all."""
    envelopes = await write_outbox(msg_engine, 7)
    other = await asyncpg.connect(asyncpg_dsn(env.DATABASE_URL))
    relay = OutboxRelay(SCHEMA, broker, database_url=env.DATABASE_URL)
    try:
        taken = await other.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", f"outbox-relay:{SCHEMA}"
        )
        assert taken
        assert await relay.publish_batch() == 0
        assert await queue_depth(broker.topology.queue_name(QUEUE)) == 0
        await other.close()  # the other relay dies: its lock goes with its connection
        assert await relay.publish_batch() == len(envelopes)
        assert await relay.publish_batch() == 0
        assert await queue_depth(broker.topology.queue_name(QUEUE)) == 1  # one bundle
    finally:
        await relay.close()
        if not other.is_closed():
            await other.close()


async def test_a_position_lost_with_the_relays_async_commit_only_republishes(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """The relay commits its positions without waiting for the disk, so a crash of
    PostgreSQL may lose the last ones it recorded: the messages they covered go out again,
    and the consumer's inbox applies each once."""
    envelopes = await write_outbox(msg_engine, 6)
    relay = OutboxRelay(SCHEMA, broker, database_url=env.DATABASE_URL)
    try:
        assert await relay.publish_batch() == 6
        async with msg_engine.connect() as conn:
            assert await conn.scalar(text(unpublished_count_sql(SCHEMA))) == 0
        relay_conn = await relay._connection()
        assert await relay_conn.fetchval("SHOW synchronous_commit") == "off"
        # What a crash would undo: the recorded positions, not the producers' rows.
        async with msg_engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {SCHEMA}.outbox_published"))
        assert await relay.publish_batch() == 6
    finally:
        await relay.close()
    assert await queue_depth(broker.topology.queue_name(QUEUE)) == 2  # one bundle each time

    consumer = await start_consumer(msg_engine, broker)
    try:

        async def drained() -> bool:
            return await queue_depth(broker.topology.queue_name(QUEUE)) == 0 and len(
                await effect_counts(msg_engine)
            ) == len(envelopes)

        await wait_until(drained, message="both copies consumed")
    finally:
        await consumer.stop()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in envelopes}


async def test_a_running_relay_keeps_each_stream_in_order_with_batches_in_flight(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """The running relay sends a batch before the ones ahead of it are confirmed: with
    batches of 7 and 40 transactions committing on two streams while it runs, the queue
    still gets each stream's messages once each, in sequence order, and every row ends
    marked sent."""
    relay = OutboxRelay(SCHEMA, broker, database_url=env.DATABASE_URL, batch_size=7)
    outbox = Outbox(SCHEMA, producer="msgtest")
    factory = make_session_factory(msg_engine)

    async def write(stream: str, count: int) -> None:
        async with factory() as session, session.begin():
            await outbox.add(
                session,
                [Draft("msgtest.happened", "msgtest.happened", {"n": i}) for i in range(count)],
                stream=stream,
            )

    relay.start()
    try:
        await asyncio.gather(*(write("AB"[i % 2], 1 + i % 5) for i in range(40)))
        expected = sum(1 + i % 5 for i in range(40))

        async def all_marked() -> bool:
            async with msg_engine.connect() as conn:
                unsent = await conn.scalar(text(unpublished_count_sql(SCHEMA)))
            return unsent == 0

        await wait_until(all_marked, message="every outbox row marked sent")
    finally:
        await relay.stop()
    received: dict[str, list[int]] = {"A": [], "B": []}
    for envelope in await take_all(broker):
        received[envelope.stream].append(envelope.sequence)
    assert sum(map(len, received.values())) == expected
    for sequences in received.values():
        assert sequences == list(range(1, len(sequences) + 1))


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["relay_before_publish", "relay_after_publish"])
async def test_relay_killed_mid_batch_still_delivers_each_effect_once(
    msg_engine: AsyncEngine, broker: Broker, crash_at: str
) -> None:
    envelopes = await write_outbox(msg_engine, 20)
    crashed = run_harness("relay", crash_at=crash_at)
    assert await wait_exit(crashed) == -signal.SIGKILL
    async with msg_engine.connect() as conn:
        unpublished = await conn.scalar(text(unpublished_count_sql(SCHEMA)))
    assert unpublished == 20, "the killed relay must not have marked anything sent"
    # The relay packs the 20 messages into one bundle (same routing key, in order).
    published_before_restart = await queue_depth(broker.topology.queue_name(QUEUE))
    assert published_before_restart == (1 if crash_at == "relay_after_publish" else 0)

    restarted = run_harness("relay")
    assert await wait_exit(restarted) == 0
    assert await queue_depth(broker.topology.queue_name(QUEUE)) == published_before_restart + 1

    consumer = await start_consumer(msg_engine, broker)
    try:

        async def drained() -> bool:
            return (
                await queue_depth(broker.topology.queue_name(QUEUE)) == 0
                and len(await effect_counts(msg_engine)) == 20
            )

        await wait_until(drained, message="queue drained")
        counts = await effect_counts(msg_engine)
        assert counts == {e.message_id: 1 for e in envelopes}
    finally:
        await consumer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_consumer_killed_after_commit_before_ack_applies_once(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    envelopes = await write_outbox(msg_engine, 10)
    assert await publish_all(broker) == [10, 0]

    crashed = run_harness("consume", crash_at="consumer_after_commit", kind=kind)
    assert await wait_exit(crashed) == -signal.SIGKILL
    applied_by_crashed = await effect_counts(msg_engine)
    assert applied_by_crashed, "the consumer died after committing at least one effect"
    # Nothing was acknowledged: the broker still holds the bundle for the next consumer.
    assert await queue_depth(broker.topology.queue_name(QUEUE)) == 1

    survivor = run_harness("consume", kind=kind)
    try:

        async def drained() -> bool:
            return (
                await queue_depth(broker.topology.queue_name(QUEUE)) == 0
                and len(await effect_counts(msg_engine)) == 10
            )

        await wait_until(drained, timeout=30, message="survivor drained the queue")
    finally:
        survivor.send_signal(signal.SIGTERM)
        await wait_exit(survivor)
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in envelopes}


def duplicates_seen(consumer: str) -> float:
    value = REGISTRY.get_sample_value("exchange_messages_duplicate_total", {"consumer": consumer})
    return value or 0.0


@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_redelivered_and_duplicated_messages_change_nothing(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    envelope = Envelope(
        message_id=str(uuid7()),
        type="msgtest.dup",
        producer="msgtest",
        stream="dup",
        sequence=1,
        payload={"k": "v"},
    )
    message = OutgoingMessage.from_envelope("msgtest.dup", envelope)
    duplicates_before = duplicates_seen("harness")
    await broker.publish([message, message, message])
    consumer = await start_consumer(msg_engine, broker, kind)
    try:

        async def all_three_handled() -> bool:
            # Ready-message counts exclude deliveries in flight; the inbox's own count does not.
            return duplicates_seen("harness") - duplicates_before == 2

        await wait_until(all_three_handled, message="both duplicates recognised")
        assert await effect_counts(msg_engine) == {envelope.message_id: 1}
    finally:
        await consumer.stop()


@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_a_message_that_always_fails_is_dead_lettered_and_others_proceed(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    poison = (await write_outbox(msg_engine, 1, poison=True))[0]
    healthy = await write_outbox(msg_engine, 5)
    assert await publish_all(broker) == [6, 0]
    consumer = await start_consumer(msg_engine, broker, kind)
    dlq = broker.topology.dead_letter_queue_name(QUEUE)
    try:

        async def settled() -> bool:
            return await queue_depth(dlq) == 1 and len(await effect_counts(msg_engine)) == 5

        await wait_until(settled, timeout=30, message="poison dead-lettered, others applied")
    finally:
        await consumer.stop()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in healthy}
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(dlq)
        dead = await queue.get(timeout=5)
        assert dead is not None
        # The poison shared a bundle with the healthy ones; those were applied on their own.
        carried = Envelope.decode_message(dead)
        assert poison.message_id in {e.message_id for e in carried}
        # The consumer set it aside itself, without waiting for the delivery limit.
        deaths = (dead.headers or {}).get("x-death")
        assert isinstance(deaths, list)
        assert [death["reason"] for death in deaths] == ["rejected"]
        await dead.ack()


@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_a_bundle_set_aside_waits_out_a_transient_fault_for_its_healthy_messages(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    """A bundle with a poison in it is dead-lettered, but first its healthy messages are
    applied one at a time; a transient fault while they are is waited out in place (not
    taken for a failure that would leave them to a replay), and they take effect in order."""
    await write_outbox(msg_engine, 1, poison=True)
    healthy = await write_outbox(msg_engine, 5)
    assert await publish_all(broker) == [6, 0]
    dlq = broker.topology.dead_letter_queue_name(QUEUE)
    async with refused_inserts(msg_engine, f"{SCHEMA}.effects", sqlstate="40001") as refusals:
        consumer = await start_consumer(msg_engine, broker, kind)
        try:

            async def retried_in_place() -> bool:
                # each healthy message refused once would be 5
                return await refusals.count() > 2 * len(healthy)

            await wait_until(retried_in_place, timeout=30, message="set-aside retries")
            assert await queue_depth(dlq) == 0
            await refusals.lift()

            async def settled() -> bool:
                return await queue_depth(dlq) == 1 and len(await effect_counts(msg_engine)) == 5

            await wait_until(settled, timeout=30, message="healthy applied, bundle set aside")
        finally:
            await consumer.stop()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in healthy}
    async with msg_engine.connect() as conn:
        applied = [
            m
            for (m,) in await conn.execute(
                text(f"SELECT message_id::text FROM {SCHEMA}.effects ORDER BY id")
            )
        ]
    assert applied == [e.message_id for e in healthy]


@pytest.mark.parametrize("kind", TRANSACTION_KINDS)
async def test_messages_wait_out_a_transient_fault_in_their_order(
    msg_engine: AsyncEngine, broker: Broker, kind: str
) -> None:
    """While every commit of an effect fails with a serialization failure, more times than
    the delivery limit, nothing is returned to the queue or dead-lettered; once the fault
    clears, every message takes effect once, in the order it was sent."""
    sent: list[Envelope] = []
    for _ in range(3):  # three relay cycles: three deliveries at least
        sent += await write_outbox(msg_engine, 20)
        await publish_all(broker)
    async with refused_inserts(msg_engine, f"{SCHEMA}.effects", sqlstate="40001") as refusals:
        consumer = await start_consumer(msg_engine, broker, kind)
        try:

            async def refused_often() -> bool:
                return await refusals.count() > DELIVERY_LIMIT + 1

            await wait_until(refused_often, timeout=30, message="commits refused")
            await refusals.lift()

            async def all_applied() -> bool:
                return len(await effect_counts(msg_engine)) == len(sent)

            await wait_until(
                all_applied, timeout=30, message="every message, once the fault cleared"
            )
        finally:
            await consumer.stop()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in sent}
    async with msg_engine.connect() as conn:
        applied = [
            m
            for (m,) in await conn.execute(
                text(f"SELECT message_id::text FROM {SCHEMA}.effects ORDER BY id")
            )
        ]
    assert applied == [e.message_id for e in sent]
    assert await queue_depth(broker.topology.dead_letter_queue_name(QUEUE)) == 0


async def test_a_message_whose_id_is_not_a_uuid_is_dead_lettered_and_others_proceed(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """An envelope that decodes but whose id the inbox cannot record fails alone: the
    messages before and after it on its stream are applied, and it is dead-lettered."""
    good = [Envelope(str(uuid7()), "t", "p", "odd-ids", s, {}) for s in (1, 3)]
    odd = Envelope("not-a-uuid", "t", "p", "odd-ids", 2, {})
    await broker.publish(
        [OutgoingMessage.from_envelope("msgtest.odd", e) for e in (good[0], odd, good[1])]
    )
    consumer = await start_consumer(msg_engine, broker)
    dlq = broker.topology.dead_letter_queue_name(QUEUE)
    try:

        async def settled() -> bool:
            return await queue_depth(dlq) == 1 and len(await effect_counts(msg_engine)) == 2

        await wait_until(settled, timeout=30, message="odd id dead-lettered, others applied")
    finally:
        await consumer.stop()
    assert await effect_counts(msg_engine) == {e.message_id: 1 for e in good}


@pytest.mark.parametrize(
    ("body", "content_type", "content_encoding"),
    [
        (b"not json", "application/json", None),
        (b"not deflate data", BUNDLE_CONTENT_TYPE, DEFLATE),
        (b"[]", BUNDLE_CONTENT_TYPE, "br"),
    ],
    ids=["not-json", "corrupt-deflate", "unknown-encoding"],
)
async def test_an_undecodable_message_goes_straight_to_the_dead_letter_queue(
    msg_engine: AsyncEngine,
    broker: Broker,
    body: bytes,
    content_type: str,
    content_encoding: str | None,
) -> None:
    await broker.publish(
        [
            OutgoingMessage(
                routing_key="msgtest.garbage",
                body=body,
                message_id="x",
                type="garbage",
                correlation_id=None,
                producer="test",
                stream="garbage",
                sequence=1,
                content_type=content_type,
                content_encoding=content_encoding,
            )
        ]
    )
    consumer = await start_consumer(msg_engine, broker)
    dlq = broker.topology.dead_letter_queue_name(QUEUE)
    try:

        async def dead_lettered() -> bool:
            return await queue_depth(dlq) == 1

        await wait_until(dead_lettered, message="garbage dead-lettered")
    finally:
        await consumer.stop()
    assert await effect_counts(msg_engine) == {}


async def test_inbox_reports_a_gap_until_the_missing_message_arrives(
    msg_engine: AsyncEngine,
) -> None:
    inbox = Inbox(SCHEMA, "gapcheck")
    factory = make_session_factory(msg_engine)

    def envelope(sequence: int) -> Envelope:
        return Envelope(str(uuid7()), "t", "p", "book-A", sequence, {})

    async with factory() as session, session.begin():
        for sequence in (1, 2, 4, 5):
            assert await inbox.record(session, envelope(sequence))
    async with factory() as session:
        gaps = await inbox.gaps(session)
        assert [(g.stream, g.contiguous_upto, g.highest_seen) for g in gaps] == [("book-A", 2, 5)]
    async with factory() as session, session.begin():
        assert await inbox.record(session, envelope(3))
    async with factory() as session:
        assert await inbox.gaps(session) == []
        assert await inbox.position(session, "book-A") == 5


#: Batches of (stream, sequence): a pair seen before is a redelivery of that message (a
#: stream numbers each of its messages once).
_batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from("AB"), st.integers(1, 8)),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=5,
)


async def inbox_records(engine: AsyncEngine, consumer: str) -> list[tuple[str, int]]:
    """The (stream, sequence) of the consumer's recorded ids, in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT stream, sequence FROM {SCHEMA}.inbox WHERE consumer = :c "
                "ORDER BY stream, sequence"
            ),
            {"c": consumer},
        )
        return [(r.stream, r.sequence) for r in rows]


class _InboxModel:
    """What an inbox must answer, from the messages applied so far alone."""

    def __init__(self) -> None:
        self.applied: dict[str, set[int]] = {"A": set(), "B": set()}

    def record_many(self, batch: list[tuple[str, int]]) -> list[bool]:
        fresh = []
        for stream, sequence in batch:
            fresh.append(sequence not in self.applied[stream])
            self.applied[stream].add(sequence)
        return fresh

    def position(self, stream: str) -> int:
        upto = 0
        while upto + 1 in self.applied[stream]:
            upto += 1
        return upto

    def gaps(self) -> list[tuple[str, int, int]]:
        return [
            (stream, self.position(stream), max(applied))
            for stream, applied in sorted(self.applied.items())
            if applied and max(applied) > self.position(stream)
        ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=_batches)
async def test_any_batches_are_recorded_as_the_messages_applied_so_far_say(
    msg_engine: AsyncEngine, batches: list[list[tuple[str, int]]]
) -> None:
    """Out of order, with gaps, redeliveries within and across batches: each message is new
    exactly when it was not applied before, each stream's position and gap are those of the
    messages applied, whether recorded a batch at a time or one by one, and every message
    applied past its stream's position has its id recorded (the position alone cannot
    recognise it)."""
    run = uuid7().hex[:12]
    one, many = Inbox(SCHEMA, f"one-{run}"), Inbox(SCHEMA, f"many-{run}")
    model = _InboxModel()
    factory = make_session_factory(msg_engine)
    messages: dict[tuple[str, int], Envelope] = {}
    for batch in batches:
        envelopes = [
            messages.setdefault(key, Envelope(str(uuid7()), "t", "p", *key, {})) for key in batch
        ]
        async with factory() as session, session.begin():
            batched = await many.record_many(session, envelopes)
            singly = [await one.record(session, e) for e in envelopes]
        expected = model.record_many(batch)
        assert batched == expected
        assert singly == expected
        async with factory() as session:
            for inbox in (one, many):
                for stream in "AB":
                    assert await inbox.position(session, stream) == model.position(stream)
                assert [
                    (g.stream, g.contiguous_upto, g.highest_seen) for g in await inbox.gaps(session)
                ] == model.gaps()
                recorded = set(await inbox_records(msg_engine, inbox.consumer))
                past_position = {
                    (stream, sequence)
                    for stream, applied in model.applied.items()
                    for sequence in applied
                    if sequence > model.position(stream)
                }
                assert past_position <= recorded
                assert recorded <= {
                    (stream, sequence)
                    for stream, applied in model.applied.items()
                    for sequence in applied
                }


async def test_messages_in_order_move_the_position_and_record_no_ids(
    msg_engine: AsyncEngine,
) -> None:
    """The first messages of a stream the consumer has no position for have their ids
    recorded. After that, with no gap open, a message that runs on from its stream's
    position only moves the position; one above a gap, or applied while a gap is open, has
    its id recorded, and a copy is still a duplicate once the gap has closed."""
    inbox = Inbox(SCHEMA, f"in-order-{uuid7().hex[:12]}")
    factory = make_session_factory(msg_engine)

    def envelope(stream: str, sequence: int) -> Envelope:
        return Envelope(str(uuid7()), "t", "p", stream, sequence, {})

    async def recorded() -> list[tuple[str, int]]:
        return await inbox_records(msg_engine, inbox.consumer)

    first = [envelope("A", 1), envelope("A", 2), envelope("B", 1)]
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, first) == [True, True, True]
    assert await recorded() == [("A", 1), ("A", 2), ("B", 1)]
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, [envelope("A", 3), envelope("B", 2)]) == [
            True,
            True,
        ]
        assert await inbox.record(session, envelope("A", 4))
    assert await recorded() == [("A", 1), ("A", 2), ("B", 1)]
    above_gap = envelope("A", 6)
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, [above_gap, envelope("A", 7)]) == [True, True]
    assert await recorded() == [("A", 1), ("A", 2), ("A", 6), ("A", 7), ("B", 1)]
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, [envelope("A", 5), above_gap]) == [True, False]
    async with factory() as session:
        assert await inbox.position(session, "A") == 7
        assert await inbox.gaps(session) == []
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, [above_gap, envelope("A", 8)]) == [False, True]
    # 5 came while a gap was open, so its id was recorded too; 8 ran on again.
    assert await recorded() == [("A", 1), ("A", 2), ("A", 5), ("A", 6), ("A", 7), ("B", 1)]


@pytest.mark.parametrize("first_on_stream", [True, False], ids=["new-stream", "running-stream"])
async def test_a_copy_applied_while_the_original_is_uncommitted_waits_and_is_a_duplicate(
    msg_engine: AsyncEngine, first_on_stream: bool
) -> None:
    """Two consumers (an active one whose broker connection dropped mid-transaction, and
    the standby the broker handed the message to) record the same message at once: the
    second waits for the first's transaction and, once it commits, finds the message
    applied. Whether or not the message runs on from its stream's position."""
    inbox = Inbox(SCHEMA, f"concurrent-{uuid7().hex[:12]}")
    factory = make_session_factory(msg_engine)
    stream = f"s-{uuid7().hex[:8]}"
    sequence = 1
    if not first_on_stream:
        async with factory() as session, session.begin():
            assert await inbox.record_many(
                session, [Envelope(str(uuid7()), "t", "p", stream, s, {}) for s in (1, 2)]
            ) == [True, True]
        sequence = 3
    message = Envelope(str(uuid7()), "t", "p", stream, sequence, {})

    async def waiting_for_a_lock() -> bool:
        async with msg_engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            return bool(waiting)

    async with factory() as first, first.begin():
        assert await inbox.record_many(first, [message]) == [True]

        async def copy() -> list[bool]:
            async with factory() as second, second.begin():
                return await inbox.record_many(second, [message])

        second = asyncio.create_task(copy())
        await wait_until(waiting_for_a_lock, message="the copy waits for the original")
        assert not second.done()
    assert await asyncio.wait_for(second, 30) == [False]
    async with factory() as session:
        assert await inbox.position(session, stream) == sequence


async def test_a_batch_is_recorded_like_its_messages_one_by_one(msg_engine: AsyncEngine) -> None:
    """record_many (what the consumer uses): a copy of a message in the same batch or an
    earlier batch is a duplicate; positions and gaps are those of one-by-one recording."""
    one, many = Inbox(SCHEMA, "by-one"), Inbox(SCHEMA, "by-batch")
    factory = make_session_factory(msg_engine)

    def envelope(stream: str, sequence: int) -> Envelope:
        return Envelope(str(uuid7()), "t", "p", stream, sequence, {})

    first = [envelope("A", 1), envelope("A", 2), envelope("B", 2), envelope("A", 4)]
    again = first[1]
    second = [again, envelope("A", 3), envelope("B", 3), envelope("A", 5)]
    second.append(second[1])  # the same message twice in one batch
    async with factory() as session, session.begin():
        assert await many.record_many(session, first) == [True, True, True, True]
        assert [await one.record(session, e) for e in first] == [True, True, True, True]
    async with factory() as session:
        assert [
            (g.stream, g.contiguous_upto, g.highest_seen) for g in await many.gaps(session)
        ] == [
            ("A", 2, 4),
            ("B", 0, 2),
        ]
        assert await many.gaps(session) == [
            type(g)(g.stream, g.contiguous_upto, g.highest_seen) for g in await one.gaps(session)
        ]
    async with factory() as session, session.begin():
        assert await many.record_many(session, second) == [False, True, True, True, False]
        assert [await one.record(session, e) for e in second] == [False, True, True, True, False]
    async with factory() as session:
        assert await many.position(session, "A") == await one.position(session, "A") == 5
        assert await many.position(session, "B") == await one.position(session, "B") == 0
        assert [
            (g.stream, g.contiguous_upto, g.highest_seen) for g in await many.gaps(session)
        ] == [("B", 0, 3)]


async def test_outbox_rows_carry_their_allocated_sequence_in_body_and_column(
    msg_engine: AsyncEngine,
) -> None:
    """The sequence is allocated and written in one statement; the stored body says the
    same as the column and the returned envelope, whatever text the payload holds."""
    tricky = {"sequence": -1, "text": '"sequence":-1', "ünïcode": "价格"}
    first = await write_outbox(msg_engine, 2, **tricky)
    second = await write_outbox(msg_engine, 3, **tricky)
    written = first + second
    assert [e.sequence for e in written] == [1, 2, 3, 4, 5]
    async with msg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(f"SELECT message_id, sequence, body FROM {SCHEMA}.outbox ORDER BY id")
            )
        ).all()
    assert [(str(r.message_id), r.sequence) for r in rows] == [
        (e.message_id, e.sequence) for e in written
    ]
    for row, envelope in zip(rows, written, strict=True):
        stored = Envelope.decode(bytes(row.body))
        assert stored == envelope
        assert stored.payload == {"n": envelope.payload["n"], **tricky}


async def test_one_statement_numbers_several_streams_each_on_from_its_own_position(
    msg_engine: AsyncEngine,
) -> None:
    """``add_streams`` allocates each stream's next numbers (a stream already written to
    goes on from where it was), and stores each row with its stream's sequence in body and
    column, in the order given."""
    outbox = Outbox(SCHEMA, producer="msgtest")
    before = await write_outbox(msg_engine, 2)  # the producer's own stream, now at 2
    wanted = {
        "msgtest.b": [Draft("msgtest.happened", "msgtest.b", {"n": i}) for i in range(3)],
        "msgtest": [Draft("msgtest.happened", "msgtest.happened", {"n": 10})],
        "msgtest.a": [Draft("msgtest.happened", "msgtest.a", {"n": i}) for i in range(2)],
        "msgtest.empty": [],
    }
    async with make_session_factory(msg_engine)() as session, session.begin():
        written = await outbox.add_streams(session, wanted)
    assert {stream: [e.sequence for e in envelopes] for stream, envelopes in written.items()} == {
        "msgtest.b": [1, 2, 3],
        "msgtest": [3],
        "msgtest.a": [1, 2],
    }
    assert [e.payload for e in written["msgtest.b"]] == [d.payload for d in wanted["msgtest.b"]]
    async with msg_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(f"SELECT stream, sequence, routing_key, body FROM {SCHEMA}.outbox ORDER BY id")
            )
        ).all()
    in_order = [*before, *written["msgtest.b"], *written["msgtest"], *written["msgtest.a"]]
    assert [(r.stream, r.sequence) for r in rows] == [(e.stream, e.sequence) for e in in_order]
    assert [r.routing_key for r in rows[2:]] == ["msgtest.b"] * 3 + [
        "msgtest.happened",
        "msgtest.a",
        "msgtest.a",
    ]
    assert [Envelope.decode(bytes(r.body)) for r in rows] == in_order


async def test_inbox_records_many_at_once_with_the_same_positions(
    msg_engine: AsyncEngine,
) -> None:
    inbox = Inbox(SCHEMA, "gapcheck-many")
    factory = make_session_factory(msg_engine)

    def envelope(stream: str, sequence: int) -> Envelope:
        return Envelope(str(uuid7()), "t", "p", stream, sequence, {})

    first = [envelope("book-A", s) for s in (1, 2, 4, 5)] + [envelope("book-B", 2)]
    async with factory() as session, session.begin():
        flags = await inbox.record_many(session, [*first, first[1]])  # one listed twice
        assert flags == [True] * len(first) + [False]
    async with factory() as session:
        gaps = await inbox.gaps(session)
        assert [(g.stream, g.contiguous_upto, g.highest_seen) for g in gaps] == [
            ("book-A", 2, 5),
            ("book-B", 0, 2),
        ]
    late = [envelope("book-A", 3), envelope("book-B", 1)]
    async with factory() as session, session.begin():
        assert await inbox.record_many(session, [first[0], *late]) == [False, True, True]
    async with factory() as session:
        assert await inbox.gaps(session) == []
        assert await inbox.position(session, "book-A") == 5
        assert await inbox.position(session, "book-B") == 2


def test_crash_points_are_inert_unless_named() -> None:
    # The harness relies on this variable; the test process itself must never crash.
    assert os.environ.get("EXCHANGE_CRASH_AT") is None


async def test_the_correlation_id_travels_from_the_producer_to_the_consumer(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    seen: list[str | None] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        seen.append(correlation_id_var.get())
        await record_effect(session, envelope)

    token = correlation_id_var.set("req-7f3a")
    try:
        envelopes = await write_outbox(msg_engine, 1)
    finally:
        correlation_id_var.reset(token)
    assert envelopes[0].correlation_id == "req-7f3a"
    assert await publish_all(broker) == [1, 0]
    consumer = InboxConsumer(
        name="correlation",
        queue=QUEUE,
        schema=SCHEMA,
        session_factory=make_session_factory(msg_engine),
        handler=handler,
    )
    await consumer.start(broker)
    try:

        async def handled() -> bool:
            return bool(seen)

        await wait_until(handled, message="message handled")
    finally:
        await consumer.stop()
    assert seen == ["req-7f3a"]
    assert correlation_id_var.get() is None


async def test_publishing_moves_each_streams_position_and_leaves_the_rows_alone(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """The relay records how far each stream is published; the outbox rows are never
    rewritten, and a later read starts past the position."""
    await write_stream(msg_engine, "A", 5)
    await write_stream(msg_engine, "B", 3)
    async with msg_engine.connect() as conn:
        versions = (await conn.execute(text(f"SELECT id, xmin::text FROM {SCHEMA}.outbox"))).all()
    assert await publish_all(broker) == [8, 0]
    assert await published_positions(msg_engine) == {"A": 5, "B": 3}
    async with msg_engine.connect() as conn:
        after = (await conn.execute(text(f"SELECT id, xmin::text FROM {SCHEMA}.outbox"))).all()
        assert await conn.scalar(text(unpublished_count_sql(SCHEMA))) == 0
    assert sorted(after) == sorted(versions), "publishing must not update outbox rows"
    assert [(e.stream, e.sequence) for e in await take_all(broker)] == [
        *(("A", n) for n in range(1, 6)),
        *(("B", n) for n in range(1, 4)),
    ]

    more = await write_stream(msg_engine, "A", 2)
    async with msg_engine.connect() as conn:
        assert await conn.scalar(text(unpublished_count_sql(SCHEMA))) == 2
    assert await publish_all(broker) == [2, 0]
    assert [e.message_id for e in await take_all(broker)] == [e.message_id for e in more]
    assert await published_positions(msg_engine) == {"A": 7, "B": 3}


async def test_the_positions_migration_keeps_what_was_published_and_what_was_not(
    msg_engine: AsyncEngine, broker: Broker
) -> None:
    """An outbox that marked rows sent moves to positions: each stream's position is the
    end of its sent prefix, so exactly the unsent rows are published afterwards; the
    downgrade marks sent again what the positions cover."""
    await create_schema(msg_engine, outbox_positions=False)
    await write_stream(msg_engine, "A", 5)
    await write_stream(msg_engine, "B", 3)
    await write_stream(msg_engine, "C", 2)
    async with msg_engine.begin() as conn:
        await conn.execute(
            text(
                f"UPDATE {SCHEMA}.outbox SET published_at = now() "
                "WHERE (stream = 'A' AND sequence <= 3) OR stream = 'B'"
            )
        )
    sent_before = {("A", 1), ("A", 2), ("A", 3), ("B", 1), ("B", 2), ("B", 3)}

    await run_migration(msg_engine, track_outbox_positions)
    assert await published_positions(msg_engine) == {"A": 3, "B": 3, "C": 0}

    await run_migration(msg_engine, untrack_outbox_positions)
    async with msg_engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT stream, sequence FROM {SCHEMA}.outbox WHERE published_at IS NOT NULL")
        )
        assert {(r.stream, r.sequence) for r in rows} == sent_before

    await run_migration(msg_engine, track_outbox_positions)
    assert await publish_all(broker) == [4, 0]
    assert sorted((e.stream, e.sequence) for e in await take_all(broker)) == [
        ("A", 4),
        ("A", 5),
        ("C", 1),
        ("C", 2),
    ]
