"""Idempotent consumers: that a message was applied is recorded in the same transaction as
its effect, as its stream's contiguous position, and as the message's id where the position
cannot speak for it (past a gap, or among a stream's first messages).

A redelivered message finds its sequence at or below its stream's contiguous position
(every message up to there was applied: any ids recorded for them may since have been
pruned, ``shared.messaging.retention``), or its id recorded, and is acknowledged with no
effect.
A batch that fails is never returned to the queue, where it would come back behind later
messages (``shared.messaging.ordered``): a transient fault is retried in place, and a
message whose handler keeps failing is dead-lettered alone; a body that is not an
envelope goes to the dead-letter queue at once.
Sequence numbers per stream are tracked so that a missing message shows up as a gap.
"""

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import check_identifier, unit_of_work
from shared.driver import DriverPool, Tx
from shared.faults import crash_point
from shared.logging import correlation_id_var
from shared.messaging.batching import DeliveryBatcher
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope, EnvelopeError
from shared.messaging.ordered import Delivery, commit_in_order, salvage_bundle
from shared.messaging.topology import QueueSpec
from shared.metrics import (
    MESSAGES_CONSUMED,
    MESSAGES_DUPLICATE,
    MESSAGES_FAILED,
    MESSAGES_REJECTED,
)
from shared.sql import Statement

log = logging.getLogger(__name__)

Handler = Callable[[Tx, Envelope], Awaitable[None]]
#: Optional hooks around a batch's handlers, in its transaction: ``begin`` sees every
#: envelope of the batch first (to load what they touch in one statement), ``end`` runs
#: after the last handler (to write back what they changed in one statement).
BatchBegin = Callable[[Tx, Sequence[Envelope]], Awaitable[None]]
BatchEnd = Callable[[Tx], Awaitable[None]]
#: Optional: applies every new envelope of a delivery batch at once (set-based), in order.
BatchHandler = Callable[[Tx, Sequence[Envelope]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamGap:
    stream: str
    contiguous_upto: int
    highest_seen: int


class Inbox:
    """The record of applied messages, per consumer, in one service's schema."""

    def __init__(self, schema: str, consumer: str) -> None:
        self.schema = check_identifier(schema)
        self.consumer = consumer
        # A batch recorded and each of its streams' positions moved in one statement. The
        # streams' rows are locked first, in stream order, so the positions read are the
        # latest: a copy of a message being applied by another transaction (a standby
        # handed it when the active consumer's broker connection dropped) waits for that
        # transaction and then finds the message at or below the position. A message at or
        # below its stream's contiguous position was applied before. When no gap is open on
        # its stream (nothing applied past the position, so nothing recorded there), a new
        # message that runs on from the position (the batch's sequences past it, in order,
        # each one more than the last) only moves the position: its id is not written,
        # because the position alone says it was applied (a stream numbers each message
        # once). Any other message, and the first ones of a stream the consumer has no
        # position for yet (there is no row to lock: the id's key is the guard), has its id
        # recorded and is recognised by it until the position covers it (``_close_gaps``;
        # the pruner deletes such records later). Then one row per stream with its position
        # after the batch.
        self._record_many = Statement(
            f"""
            WITH positions AS (
                SELECT stream, contiguous_upto, highest_seen FROM {self.schema}.inbox_stream
                WHERE consumer = :consumer AND stream = ANY(CAST(:streams AS text[]))
                ORDER BY stream
                FOR UPDATE
            ), batch AS (
                SELECT m.message_id, m.stream, m.sequence,
                       coalesce(p.highest_seen = p.contiguous_upto, false)
                       AND m.sequence = p.contiguous_upto
                           + dense_rank() OVER (PARTITION BY m.stream ORDER BY m.sequence)
                           AS runs_on
                FROM unnest(CAST(:message_ids AS uuid[]), CAST(:streams AS text[]),
                            CAST(:sequences AS bigint[])) AS m(message_id, stream, sequence)
                LEFT JOIN positions p ON p.stream = m.stream
                WHERE m.sequence > coalesce(p.contiguous_upto, 0)
            ), recorded AS (
                INSERT INTO {self.schema}.inbox (consumer, message_id, stream, sequence)
                SELECT :consumer, message_id, stream, sequence FROM batch
                WHERE NOT runs_on
                ORDER BY message_id
                ON CONFLICT DO NOTHING
                RETURNING message_id, stream, sequence
            ), applied AS (
                SELECT message_id, stream, sequence FROM batch WHERE runs_on
                UNION ALL
                SELECT message_id, stream, sequence FROM recorded
            ), fresh AS (
                SELECT stream, min(sequence) AS lo, max(sequence) AS hi,
                       count(DISTINCT sequence) AS n
                FROM applied GROUP BY stream
            ), reached AS (
                INSERT INTO {self.schema}.inbox_stream AS s
                    (consumer, stream, contiguous_upto, highest_seen)
                SELECT :consumer, f.stream,
                       CASE WHEN f.lo = 1 AND f.hi - f.lo + 1 = f.n THEN f.hi ELSE 0 END, f.hi
                FROM fresh f ORDER BY f.stream
                ON CONFLICT (consumer, stream) DO UPDATE SET
                    highest_seen = greatest(s.highest_seen, EXCLUDED.highest_seen),
                    contiguous_upto = (
                        SELECT CASE WHEN f.hi - f.lo + 1 = f.n AND f.lo <= s.contiguous_upto + 1
                                    THEN greatest(s.contiguous_upto, f.hi)
                                    ELSE s.contiguous_upto END
                        FROM fresh f WHERE f.stream = EXCLUDED.stream
                    )
                RETURNING stream, contiguous_upto, highest_seen
            )
            SELECT message_id, NULL AS stream, NULL AS upto, NULL AS highest FROM applied
            UNION ALL
            SELECT NULL, stream, contiguous_upto, highest_seen FROM reached
            """
        )
        self._advance_many = Statement(
            f"""
            UPDATE {self.schema}.inbox_stream s SET contiguous_upto = u.upto
            FROM unnest(CAST(:streams AS text[]), CAST(:uptos AS bigint[])) AS u(stream, upto)
            WHERE s.consumer = :consumer AND s.stream = u.stream
            """
        )
        self._next_recorded = Statement(
            f"""
            SELECT 1 FROM {self.schema}.inbox
            WHERE consumer = :consumer AND stream = :stream AND sequence = :sequence
            """
        )

    async def record(self, session: Tx, envelope: Envelope) -> bool:
        """Record the message; False when it was applied before (a redelivery)."""
        (fresh,) = await self.record_many(session, [envelope])
        return fresh

    async def record_many(self, session: Tx, envelopes: Sequence[Envelope]) -> list[bool]:
        """Record a batch's messages and their streams' positions in one statement (more
        only to close a gap); for each envelope, in order, False when it was applied before
        (a redelivery, or an earlier copy in the same batch). The same answers as recording
        the messages one at a time."""
        if not envelopes:
            return []
        # Not a uuid: ValueError, and the consumer narrows the failure down to that message.
        keys = [str(uuid.UUID(e.message_id)) for e in envelopes]
        rows = await self._record_many.fetch(
            session,
            consumer=self.consumer,
            message_ids=keys,
            streams=[e.stream for e in envelopes],
            sequences=[e.sequence for e in envelopes],
        )
        new: set[str] = set()
        reached: list[tuple[str, int, int]] = []
        for message_id, stream, upto, highest in rows:
            if message_id is not None:
                new.add(str(message_id))
            else:
                reached.append((stream, int(upto), int(highest)))
        fresh: list[bool] = []
        by_stream: dict[str, set[int]] = {}
        for key, envelope in zip(keys, envelopes, strict=True):
            if key in new:
                new.discard(key)  # a second copy in this batch is a duplicate
                fresh.append(True)
                by_stream.setdefault(envelope.stream, set()).add(envelope.sequence)
            else:
                fresh.append(False)
        await self._close_gaps(session, by_stream, reached)
        return fresh

    async def _close_gaps(
        self,
        session: Tx,
        by_stream: dict[str, set[int]],
        reached: list[tuple[str, int, int]],
    ) -> None:
        """Advance each stream's contiguous position over what is recorded past it: the
        batch's new sequences, and messages recorded earlier out of order."""
        advanced: dict[str, int] = {}
        for stream, contiguous, highest in reached:
            sequences = by_stream[stream]
            upto = contiguous
            while upto < highest:
                if upto + 1 in sequences:
                    upto += 1
                    continue
                # A gap in this batch: a message recorded earlier may close part of it.
                recorded = await self._next_recorded.fetch(
                    session, consumer=self.consumer, stream=stream, sequence=upto + 1
                )
                if not recorded:
                    break
                upto += 1
            if upto != contiguous:
                advanced[stream] = upto
        if advanced:
            await self._advance_many.execute(
                session,
                consumer=self.consumer,
                streams=list(advanced),
                uptos=list(advanced.values()),
            )

    async def gaps(self, session: AsyncSession) -> list[StreamGap]:
        """Streams with messages missing below the highest sequence seen."""
        rows = await session.execute(
            text(
                f"""
                SELECT stream, contiguous_upto, highest_seen FROM {self.schema}.inbox_stream
                WHERE consumer = :consumer AND highest_seen > contiguous_upto ORDER BY stream
                """
            ),
            {"consumer": self.consumer},
        )
        return [StreamGap(r.stream, r.contiguous_upto, r.highest_seen) for r in rows]

    async def position(self, session: AsyncSession, stream: str) -> int:
        """The highest sequence up to which every message of the stream was applied."""
        value = (
            await session.execute(
                text(
                    f"SELECT contiguous_upto FROM {self.schema}.inbox_stream "
                    "WHERE consumer = :consumer AND stream = :stream"
                ),
                {"consumer": self.consumer, "stream": stream},
            )
        ).scalar_one_or_none()
        return int(value or 0)


class InboxConsumer:
    """Consumes one queue, applying each new message exactly once.

    Messages already buffered are applied together in one transaction (fast under load);
    if that batch fails, each is retried alone, in order, so one bad message cannot hold
    up the rest.

    Given a ``driver`` pool, a batch runs on a plain asyncpg transaction (``shared.driver``)
    unless ``needs_session`` says one of its messages needs SQLAlchemy's session (its
    handling uses the ORM); the rest need only ``shared.sql`` statements.
    """

    def __init__(
        self,
        *,
        name: str,
        queue: QueueSpec,
        schema: str,
        session_factory: async_sessionmaker[AsyncSession],
        handler: Handler,
        max_batch: int = 200,
        batch_begin: BatchBegin | None = None,
        batch_end: BatchEnd | None = None,
        batch_handler: BatchHandler | None = None,
        linger_seconds: float = 0.0,
        driver: DriverPool | None = None,
        needs_session: Callable[[Envelope], bool] | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.inbox = Inbox(schema, name)
        self._session_factory = session_factory
        self._handler = handler
        self._batch_begin = batch_begin
        self._batch_end = batch_end
        self._batch_handler = batch_handler
        self._driver = driver
        self._needs_session = needs_session
        self._batcher = DeliveryBatcher(
            self._process, max_batch=max_batch, name=name, linger_seconds=linger_seconds
        )

    async def start(self, broker: Broker) -> None:
        self._batcher.start()
        await broker.consume(self.queue, self._batcher.receive)

    async def stop(self) -> None:
        await self._batcher.stop()

    async def _process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        groups = await self.decode(batch)
        if groups:
            await self.process_decoded(groups)

    async def decode(self, batch: Sequence[AbstractIncomingMessage]) -> list[Delivery]:
        """The batch's envelopes; a body that is not an envelope is dead-lettered at once."""
        groups: list[Delivery] = []
        for message in batch:
            try:
                groups.append((message, Envelope.decode_message(message)))
            except EnvelopeError as exc:
                MESSAGES_REJECTED.labels(self.name).inc()
                log.error(
                    "undecodable message dead-lettered",
                    extra={
                        "consumer": self.name,
                        "error": str(exc),
                        "message_id": message.message_id,
                    },
                )
                await message.reject(requeue=False)
        return groups

    async def process_decoded(self, groups: Sequence[Delivery]) -> None:
        """Apply the deliveries in one transaction. A failure never reorders them
        (``shared.messaging.ordered``): a transient fault is retried in place, anything
        else narrowed down to the one delivery that fails alone, which is dead-lettered."""
        await commit_in_order(
            groups,
            self._apply,
            set_aside=self._set_aside,
            name=self.name,
            on_failure=MESSAGES_FAILED.labels(self.name).inc,
        )

    async def _apply(self, groups: Sequence[Delivery], *, ack: bool = True) -> None:
        applied = duplicates = 0
        everything = [e for _, envelopes in groups for e in envelopes]
        async with self._transaction(everything) as session:
            if self._batch_begin is not None:
                await self._batch_begin(session, everything)
            flags = await self.inbox.record_many(session, everything)
            if self._batch_handler is not None:
                fresh = [e for e, is_fresh in zip(everything, flags, strict=True) if is_fresh]
                if fresh:
                    await self._batch_handler(session, fresh)
                applied, duplicates = len(fresh), len(everything) - len(fresh)
            else:
                for envelope, is_fresh in zip(everything, flags, strict=True):
                    if not is_fresh:
                        duplicates += 1
                        continue
                    token = correlation_id_var.set(envelope.correlation_id)
                    try:
                        await self._handler(session, envelope)
                        applied += 1
                    finally:
                        correlation_id_var.reset(token)
            if self._batch_end is not None:
                await self._batch_end(session)
        crash_point("consumer_after_commit")
        if ack:
            for message, _ in groups:
                await message.ack()
        MESSAGES_CONSUMED.labels(self.name).inc(applied)
        if duplicates:
            MESSAGES_DUPLICATE.labels(self.name).inc(duplicates)

    def _transaction(self, envelopes: Sequence[Envelope]) -> AbstractAsyncContextManager[Tx]:
        """A driver transaction when the consumer has one and no envelope needs a session;
        a session's transaction otherwise."""
        needs = self._needs_session
        if self._driver is not None and (needs is None or not any(map(needs, envelopes))):
            return self._driver.transaction()
        return unit_of_work(self._session_factory)

    async def _set_aside(self, delivery: Delivery) -> None:
        """Dead-letter a delivery that keeps failing. Of a bundle, first apply what can be:
        its messages one at a time, in order, each committed as a delivery is (a transient
        fault waited out in place, a message that keeps failing passed over); the inbox
        drops the applied ones if the bundle is replayed."""
        if await salvage_bundle(
            delivery,
            functools.partial(self._apply, ack=False),
            name=self.name,
            on_failure=MESSAGES_FAILED.labels(self.name).inc,
        ):
            return
        message = delivery[0]
        MESSAGES_REJECTED.labels(self.name).inc()
        log.error(
            "message dead-lettered: its handler failed every time",
            extra={
                "consumer": self.name,
                "message_id": message.message_id,
                "type": message.type,
            },
        )
        await message.reject(requeue=False)


class ConsumerGroup:
    """Several consumers with one writer: whatever has arrived on any of their queues is
    applied consumer by consumer in the group's order, each consumer's part in a
    transaction of its own (as that consumer alone would apply it).

    For consumers that would otherwise contend for the same rows (each holding them until
    its commit while the other waits), there are no lock waits; and the first consumers'
    work commits (and its messages go out) without waiting for the later ones'.
    """

    def __init__(
        self, *, name: str, consumers: Sequence[InboxConsumer], max_batch: int = 200
    ) -> None:
        self.name = name
        self.consumers = tuple(consumers)
        self._batcher: DeliveryBatcher[tuple[int, AbstractIncomingMessage]] = DeliveryBatcher(
            self.process, max_batch=max_batch, name=name
        )

    async def start(self, broker: Broker) -> None:
        self._batcher.start()
        for index, consumer in enumerate(self.consumers):
            await broker.consume(consumer.queue, functools.partial(self._receive, index))

    async def stop(self) -> None:
        await self._batcher.stop()

    async def _receive(self, index: int, message: AbstractIncomingMessage) -> None:
        await self._batcher.receive((index, message))

    async def process(self, batch: Sequence[tuple[int, AbstractIncomingMessage]]) -> None:
        """Apply one cycle's deliveries, each tagged with its consumer's index."""
        for index, consumer in enumerate(self.consumers):
            part = await consumer.decode([m for i, m in batch if i == index])
            if part:
                await consumer.process_decoded(part)
