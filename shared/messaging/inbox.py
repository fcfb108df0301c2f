"""Idempotent consumers: a message's id is recorded in the same transaction as its effect.

A redelivered message finds its id already recorded and is acknowledged with no effect.
A handler that raises is retried (with backoff) until the queue's delivery limit moves
the message to its dead-letter queue; a body that is not an envelope goes there at once.
Sequence numbers per stream are tracked so that a missing message shows up as a gap.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import check_identifier
from shared.faults import crash_point
from shared.logging import correlation_id_var
from shared.messaging.batching import DeliveryBatcher
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope, EnvelopeError
from shared.messaging.topology import QueueSpec
from shared.metrics import (
    MESSAGES_CONSUMED,
    MESSAGES_DUPLICATE,
    MESSAGES_FAILED,
    MESSAGES_REJECTED,
)

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
#: Optional: applies every new envelope of a delivery batch at once (set-based), in order.
BatchHandler = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]
#: One AMQP message and the envelopes it carried (one, or a bundle).
Delivery = tuple[AbstractIncomingMessage, list[Envelope]]


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
        self._record = text(
            f"""
            INSERT INTO {self.schema}.inbox (consumer, message_id, stream, sequence)
            VALUES (:consumer, :message_id, :stream, :sequence)
            ON CONFLICT DO NOTHING
            RETURNING 1
            """
        )
        self._position = text(
            f"""
            INSERT INTO {self.schema}.inbox_stream AS s (consumer, stream, contiguous_upto, highest_seen)
            VALUES (:consumer, :stream, CASE WHEN :sequence = 1 THEN 1 ELSE 0 END, :sequence)
            ON CONFLICT (consumer, stream) DO UPDATE SET
                highest_seen = greatest(s.highest_seen, EXCLUDED.highest_seen),
                contiguous_upto = CASE WHEN s.contiguous_upto + 1 = :sequence
                                       THEN :sequence ELSE s.contiguous_upto END
            RETURNING contiguous_upto, highest_seen
            """
        )
        self._next_recorded = text(
            f"""
            SELECT 1 FROM {self.schema}.inbox
            WHERE consumer = :consumer AND stream = :stream AND sequence = :sequence
            """
        )
        self._record_many = text(
            f"""
            INSERT INTO {self.schema}.inbox (consumer, message_id, stream, sequence)
            SELECT :consumer, m, s, q FROM unnest(
                CAST(:ids AS uuid[]), CAST(:streams AS text[]), CAST(:sequences AS bigint[])
            ) AS x (m, s, q)
            ON CONFLICT DO NOTHING
            RETURNING message_id
            """
        )
        # Locks the streams' rows in a fixed order (sorted), then moves each contiguous
        # position up to the first sequence not recorded.
        self._positions_many = text(
            f"""
            INSERT INTO {self.schema}.inbox_stream AS s
                (consumer, stream, contiguous_upto, highest_seen)
            SELECT :consumer, st, 0, q
            FROM unnest(CAST(:streams AS text[]), CAST(:sequences AS bigint[])) AS x (st, q)
            ON CONFLICT (consumer, stream) DO UPDATE
                SET highest_seen = greatest(s.highest_seen, EXCLUDED.highest_seen)
            """
        )
        self._advance_many = text(
            f"""
            UPDATE {self.schema}.inbox_stream AS s SET contiguous_upto = (
                SELECT g - 1 FROM generate_series(s.contiguous_upto + 1, s.highest_seen + 1) AS g
                WHERE NOT EXISTS (
                    SELECT 1 FROM {self.schema}.inbox i
                    WHERE i.consumer = s.consumer AND i.stream = s.stream AND i.sequence = g)
                ORDER BY g LIMIT 1)
            WHERE s.consumer = :consumer AND s.stream = ANY(CAST(:streams AS text[]))
              AND s.highest_seen > s.contiguous_upto
            """
        )
        self._advance = text(
            f"""
            UPDATE {self.schema}.inbox_stream SET contiguous_upto = :upto
            WHERE consumer = :consumer AND stream = :stream
            """
        )

    async def record(self, session: AsyncSession, envelope: Envelope) -> bool:
        """Record the message; False when it was applied before (a redelivery)."""
        fresh = (
            await session.execute(
                self._record,
                {
                    "consumer": self.consumer,
                    "message_id": envelope.message_id,
                    "stream": envelope.stream,
                    "sequence": envelope.sequence,
                },
            )
        ).first()
        if fresh is None:
            return False
        await self._track(session, envelope.stream, envelope.sequence)
        return True

    async def record_many(
        self, session: AsyncSession, envelopes: Sequence[Envelope]
    ) -> list[Envelope]:
        """Record many messages in a few statements; returns the new ones in their order (a
        message applied before, or listed twice, is left out). Stream positions advance as
        :meth:`record` advances them."""
        unique: dict[str, Envelope] = {}
        for envelope in envelopes:
            unique.setdefault(envelope.message_id, envelope)
        if not unique:
            return []
        inserted = await session.execute(
            self._record_many,
            {
                "consumer": self.consumer,
                "ids": list(unique),
                "streams": [e.stream for e in unique.values()],
                "sequences": [e.sequence for e in unique.values()],
            },
        )
        fresh_ids = {str(row[0]) for row in inserted}
        fresh = [e for e in unique.values() if e.message_id in fresh_ids]
        highest: dict[str, int] = {}
        for envelope in fresh:
            highest[envelope.stream] = max(highest.get(envelope.stream, 0), envelope.sequence)
        if highest:
            streams = sorted(highest)
            await session.execute(
                self._positions_many,
                {
                    "consumer": self.consumer,
                    "streams": streams,
                    "sequences": [highest[s] for s in streams],
                },
            )
            await session.execute(
                self._advance_many, {"consumer": self.consumer, "streams": streams}
            )
        return fresh

    async def _track(self, session: AsyncSession, stream: str, sequence: int) -> None:
        params = {"consumer": self.consumer, "stream": stream, "sequence": sequence}
        contiguous, highest = (await session.execute(self._position, params)).one()
        if highest <= contiguous:
            return
        # A gap is open; a late message may have just closed part of it.
        upto = contiguous
        while (
            await session.execute(
                self._next_recorded,
                {"consumer": self.consumer, "stream": stream, "sequence": upto + 1},
            )
        ).first() is not None:
            upto += 1
        if upto != contiguous:
            await session.execute(
                self._advance, {"consumer": self.consumer, "stream": stream, "upto": upto}
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
    if that batch fails, each is retried alone so one bad message cannot hold up the rest.
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
        batch_handler: BatchHandler | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.inbox = Inbox(schema, name)
        self._session_factory = session_factory
        self._handler = handler
        self._batch_handler = batch_handler
        self._batcher = DeliveryBatcher(self._process, max_batch=max_batch, name=name)

    async def start(self, broker: Broker) -> None:
        self._batcher.start()
        await broker.consume(self.queue, self._batcher.receive)

    async def stop(self) -> None:
        await self._batcher.stop()

    async def _process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        groups: list[Delivery] = []
        for message in batch:
            try:
                groups.append((message, Envelope.decode_all(message.body, message.content_type)))
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
        if not groups:
            return
        try:
            await self._apply(groups)
            return
        except Exception:
            log.warning("batch failed; retrying its messages one by one", exc_info=True)
        for message, envelopes in groups:
            try:
                await self._apply([(message, envelopes)])
                continue
            except Exception:
                if len(envelopes) == 1:
                    await self._fail(message)
                    continue
            # A bundle: keep what can be applied, return the rest to the queue.
            failed = False
            for envelope in envelopes:
                try:
                    await self._apply([(message, [envelope])], ack=False)
                except Exception:
                    failed = True
                    log.warning(
                        "message in a bundle failed",
                        exc_info=True,
                        extra={"consumer": self.name, "message_id": envelope.message_id},
                    )
            if failed:
                await self._fail(message)
            else:
                await message.ack()

    async def _apply(self, groups: Sequence[Delivery], *, ack: bool = True) -> None:
        applied = duplicates = 0
        async with self._session_factory() as session, session.begin():
            if self._batch_handler is not None:
                every = [e for _, envelopes in groups for e in envelopes]
                fresh = await self.inbox.record_many(session, every)
                if fresh:
                    await self._batch_handler(session, fresh)
                applied, duplicates = len(fresh), len(every) - len(fresh)
            else:
                for _, envelopes in groups:
                    for envelope in envelopes:
                        token = correlation_id_var.set(envelope.correlation_id)
                        try:
                            if await self.inbox.record(session, envelope):
                                await self._handler(session, envelope)
                                applied += 1
                            else:
                                duplicates += 1
                        finally:
                            correlation_id_var.reset(token)
        crash_point("consumer_after_commit")
        if ack:
            for message, _ in groups:
                await message.ack()
        MESSAGES_CONSUMED.labels(self.name).inc(applied)
        if duplicates:
            MESSAGES_DUPLICATE.labels(self.name).inc(duplicates)

    async def _fail(self, message: AbstractIncomingMessage) -> None:
        MESSAGES_FAILED.labels(self.name).inc()
        raw_count = (message.headers or {}).get("x-delivery-count", 0)
        deliveries = raw_count if isinstance(raw_count, int) else 0
        log.error(
            "message handler failed; returning it to the queue",
            extra={
                "consumer": self.name,
                "message_id": message.message_id,
                "type": message.type,
                "deliveries": deliveries + 1,
            },
        )
        # Back off a little so a transient fault (a restarting database) can clear.
        await asyncio.sleep(min(0.05 * 2**deliveries, 1.0))
        await message.nack(requeue=True)
