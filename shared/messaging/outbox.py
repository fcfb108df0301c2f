"""Transactional outbox: messages are written in the same transaction as the state change
that causes them, then a relay publishes them and marks them sent.

The relay may publish a message and die before marking it: it is then published again,
and the consumers' inbox makes the repeat harmless. One relay per schema publishes at a
time (an advisory lock), so a stream's messages leave in the order they were written.
"""

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import asyncpg_dsn, check_identifier
from shared.driver import Tx
from shared.faults import crash_point
from shared.ids import uuid7
from shared.logging import correlation_id_var
from shared.messaging.broker import Broker, OutgoingMessage, bundle
from shared.messaging.envelope import Envelope
from shared.metrics import OUTBOX_PUBLISHED, RELAY_ERRORS
from shared.notify import listen_forever
from shared.sql import Statement

log = logging.getLogger(__name__)


#: Stream → the highest sequence of it that a batch holds (or that is published).
Positions = dict[str, int]


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch the relay has sent: where it leaves each of its streams, and the wait for
    its confirms."""

    positions: Positions
    confirmed: "asyncio.Task[None]"


def positions_of(rows: Sequence[asyncpg.Record]) -> Positions:
    positions: Positions = {}
    for row in rows:
        positions[row["stream"]] = max(row["sequence"], positions.get(row["stream"], 0))
    return positions


def merge_positions(*parts: Positions) -> Positions:
    merged: Positions = {}
    for part in parts:
        for stream, upto in part.items():
            merged[stream] = max(upto, merged.get(stream, 0))
    return merged


def unpublished_count_sql(schema: str) -> str:
    """SQL counting a schema's outbox messages not yet published (confirmed and recorded)."""
    s = check_identifier(schema)
    return (
        f"SELECT coalesce(sum(s.last_sequence - coalesce(p.upto, 0)), 0)::bigint "
        f"FROM {s}.outbox_stream s LEFT JOIN {s}.outbox_published p USING (stream)"
    )


_FIRST_BACKOFF = 0.05
#: Batches sent and not yet confirmed. One more is sent while one waits (a message is
#: not held up by the confirms of the batch ahead), but no more: while they wait, what is
#: written meanwhile gathers into the next batch. Unbounded, a flow of single-order commits
#: went out a message or two at a time (twice RabbitMQ's CPU per order, and a transaction
#: downstream for each); at one, the relay is its old self less a round trip, and batches
#: of orders wait out the confirms ahead of them again (docs/benchmarks.md).
MAX_BATCHES_IN_FLIGHT = 2
#: How long confirmed batches may wait for their positions to be recorded when no new rows
#: come to carry them in their read. Under a steady flow every read records the batches
#: ahead of it (one statement a wake-up; recording at each confirm doubled the relay's
#: statements); a crash in between only means those rows are published again, which the
#: inboxes drop.
RECORD_DELAY_SECONDS = 0.05
#: The relay's only writes are its published positions, and losing the last few in a crash
#: of PostgreSQL only has the relay publish those messages again (the inboxes drop them):
#: its commits need not wait for the WAL to reach the disk. Each cycle's read (which
#: records the positions confirmed meanwhile) then answers without an fsync, and a slow
#: disk holds up the transactions whose durability matters, not the relay. What it reads
#: was committed synchronously by its producers, so it is never ahead of the disk.
RELAY_SESSION_SETTINGS = {"synchronous_commit": "off"}


def notify_channel(schema: str) -> str:
    return f"{check_identifier(schema)}_outbox"


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to be written to the outbox."""

    type: str
    routing_key: str
    payload: dict[str, Any]
    message_id: str | None = None
    #: The correlation id to carry; by default the one of the current context.
    correlation_id: str | None = None


class Outbox:
    def __init__(self, schema: str, producer: str) -> None:
        self.schema = check_identifier(schema)
        self.producer = producer
        # One statement for any number of streams: each stream's sequence numbers are
        # allocated and the rows inserted together, so a stream's row is held from here to
        # the commit and no longer across an extra round trip. The streams' rows are locked
        # in stream order (the ORDER BY of the allocating insert), as by any other writer.
        # Bodies are encoded with the placeholder sequence -1, replaced by the allocated
        # one; the envelope's own "sequence" is the first such text in its JSON (it precedes
        # the payload, and inside a JSON string the quotes are escaped). A row's sequence is
        # its stream's base plus its place among that stream's rows (:places).
        self._write = Statement(
            f"""
            WITH wanted AS (
                SELECT * FROM unnest(CAST(:streams AS text[]), CAST(:counts AS bigint[]))
                    AS w(stream, n)
            ), allocated AS (
                INSERT INTO {self.schema}.outbox_stream AS s (stream, last_sequence)
                SELECT stream, n FROM wanted ORDER BY stream
                ON CONFLICT (stream) DO UPDATE
                    SET last_sequence = s.last_sequence + EXCLUDED.last_sequence
                RETURNING s.stream, s.last_sequence
            ), bases AS (
                SELECT stream, a.last_sequence - w.n AS base
                FROM allocated a JOIN wanted w USING (stream)
            )
            INSERT INTO {self.schema}.outbox
                (message_id, stream, sequence, routing_key, message_type, correlation_id, body)
            SELECT m.message_id, m.stream, b.base + m.place, m.routing_key, m.message_type,
                   m.correlation_id,
                   convert_to(
                       regexp_replace(m.body, '"sequence":-1', '"sequence":' || (b.base + m.place)),
                       'UTF8'
                   )
            FROM unnest(
                     CAST(:message_ids AS uuid[]), CAST(:row_streams AS text[]),
                     CAST(:places AS bigint[]), CAST(:routing_keys AS text[]),
                     CAST(:types AS text[]), CAST(:bodies AS text[]),
                     CAST(:correlation_ids AS text[])
                 ) WITH ORDINALITY AS m(message_id, stream, place, routing_key, message_type,
                                        body, correlation_id, n)
                 JOIN bases b USING (stream)
            ORDER BY m.n
            RETURNING stream, sequence
            """
        )

    async def add(
        self, session: Tx, drafts: Sequence[Draft], *, stream: str | None = None
    ) -> list[Envelope]:
        """Write messages to the outbox in the session's transaction.

        Each gets the next sequence numbers of its stream (the producer's name by default).
        """
        stream_name = stream or self.producer
        return (await self.add_streams(session, {stream_name: drafts})).get(stream_name, [])

    async def add_streams(
        self, session: Tx, drafts: Mapping[str, Sequence[Draft]]
    ) -> dict[str, list[Envelope]]:
        """Write messages to several streams in one statement, in the session's
        transaction: stream → its drafts, in the order they are to be numbered. Rows go
        in that order, stream after stream as given. Returns each stream's envelopes."""
        drafted = {
            stream: self.envelopes(stream_drafts, stream)
            for stream, stream_drafts in drafts.items()
            if stream_drafts
        }
        if not drafted:
            return {}
        envelopes = [e for stream_envelopes in drafted.values() for e in stream_envelopes]
        rows = await self._write.fetch(
            session,
            streams=list(drafted),
            counts=[len(stream_envelopes) for stream_envelopes in drafted.values()],
            message_ids=[e.message_id for e in envelopes],
            row_streams=[e.stream for e in envelopes],
            places=[place for s in drafted.values() for place in range(1, len(s) + 1)],
            routing_keys=[d.routing_key for stream in drafted for d in drafts[stream]],
            types=[e.type for e in envelopes],
            bodies=[placeholder_body(e) for e in envelopes],
            correlation_ids=[e.correlation_id for e in envelopes],
        )
        first: dict[str, int] = {}
        for row in rows:
            first[row[0]] = min(row[1], first.get(row[0], row[1]))
        return {
            stream: [
                dataclasses.replace(envelope, sequence=first[stream] + offset)
                for offset, envelope in enumerate(stream_envelopes)
            ]
            for stream, stream_envelopes in drafted.items()
        }

    def envelopes(self, drafts: Sequence[Draft], stream: str) -> list[Envelope]:
        """The drafts as envelopes of a stream, their sequence still the placeholder -1
        (the outbox statement allocates the real ones)."""
        correlation_id = correlation_id_var.get()
        return [
            Envelope(
                message_id=draft.message_id or str(uuid7()),
                type=draft.type,
                producer=self.producer,
                stream=stream,
                sequence=-1,
                payload=draft.payload,
                correlation_id=draft.correlation_id or correlation_id,
            )
            for draft in drafts
        ]


def placeholder_body(envelope: Envelope) -> str:
    """The envelope's JSON with the placeholder sequence that the outbox statement replaces
    with the allocated one (``"sequence":-1``, the first such text: it precedes the payload)."""
    assert envelope.sequence == -1
    return envelope.encode().decode()


class OutboxRelay:
    """Publishes each stream's unsent outbox messages in sequence order and records how far
    each stream is published.

    A stream's messages become visible in sequence order (its numbers are allocated under a
    row lock held to the commit), so what is left to publish is whatever is committed past
    the stream's position in ``outbox_published``: the relay reads from there, through the
    ``(stream, sequence)`` index, and never updates the rows themselves.

    It works on a plain connection of its own and holds the schema's relay lock (a session
    advisory lock) while it has anything to publish, so one relay publishes at a time and a
    relay that dies releases it with its connection.

    While it runs, the relay does not wait for a batch's publisher confirms before sending
    the next: a batch is sent as soon as it is read, and its positions are recorded in the
    statement that reads a later one, once the broker has confirmed it. An order's latency
    is then one read and the broker's own, not a whole publish-confirm-record cycle of the
    batch ahead. Streams' messages in flight (sent, not yet recorded) are read past.
    ``publish_batch`` does one whole cycle, for tools and tests that drain an outbox step by
    step.
    """

    def __init__(
        self,
        schema: str,
        broker: Broker,
        *,
        database_url: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        bundle_size: int = 200,
    ) -> None:
        self.schema = check_identifier(schema)
        self._broker = broker
        self._dsn = asyncpg_dsn(database_url)
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._bundle_size = bundle_size
        self._wake = asyncio.Event()
        self._backoff = _FIRST_BACKOFF
        self._tasks: list[asyncio.Task[None]] = []
        self._conn: asyncpg.Connection | None = None
        self._key = f"outbox-relay:{self.schema}"
        # The lock CTE holds a volatile function, so PostgreSQL evaluates it once, before
        # the rows are read; its row says whether the lock is held (taken now when $3, else
        # held since an earlier statement), and when another relay holds it nothing is read
        # or recorded. The batch is read in the statement's snapshot, in which the positions
        # being recorded ($4, $5) are not yet seen: reads start past the larger of the
        # recorded position and the one given for the stream ($6, $7: in flight or being
        # recorded now). Each stream's rows are a run of its sequence from there; the batch
        # is the first of them in id order (within a stream, id order is sequence order).
        self._cycle = f"""
            WITH relay_lock AS MATERIALIZED (
                SELECT CASE WHEN $3 THEN pg_try_advisory_lock(hashtext($1)) ELSE true END
                       AS held
            ), recorded AS (
                {self._record_positions("$4", "$5", "WHERE (SELECT held FROM relay_lock)")}
            ), pending AS (
                SELECT stream, after FROM (
                    SELECT s.stream, s.last_sequence,
                           greatest(coalesce(p.upto, 0), coalesce(f.upto, 0)) AS after
                    FROM {self.schema}.outbox_stream s
                    LEFT JOIN {self.schema}.outbox_published p USING (stream)
                    LEFT JOIN unnest($6::text[], $7::bigint[]) AS f(stream, upto) USING (stream)
                    WHERE (SELECT held FROM relay_lock)
                ) AS positions
                WHERE last_sequence > after
            ), batch AS (
                SELECT o.* FROM pending
                CROSS JOIN LATERAL (
                    SELECT id, message_id, stream, sequence, routing_key, message_type,
                           correlation_id, body
                    FROM {self.schema}.outbox o
                    WHERE o.stream = pending.stream AND o.sequence > pending.after
                    ORDER BY o.sequence
                    LIMIT $2
                ) o
                ORDER BY o.id
                LIMIT $2
            )
            SELECT l.held, b.* FROM relay_lock l LEFT JOIN batch b ON true ORDER BY b.id
            """
        # The unlock reads the upsert's output, so it runs after the positions are recorded
        # (a CTE nobody reads runs at the end of the statement, after the unlock). Another
        # relay may still take the lock before this statement commits and publish the batch
        # again: a duplicate the inboxes drop, never a reordering.
        self._record = f"""
            WITH recorded AS (
                {self._record_positions("$2", "$3")}
                RETURNING 1
            )
            SELECT pg_advisory_unlock(hashtext($1)) FROM (SELECT count(*) FROM recorded) AS done
            """
        self._unlock = "SELECT pg_advisory_unlock(hashtext($1))"

    def _record_positions(self, streams: str, uptos: str, where: str = "") -> str:
        """The upsert of streams' published positions (array parameters ``streams`` and
        ``uptos``); a position never moves back."""
        return f"""
            INSERT INTO {self.schema}.outbox_published AS p (stream, upto)
            SELECT r.stream, r.upto FROM unnest({streams}::text[], {uptos}::bigint[])
                AS r(stream, upto)
            {where}
            ON CONFLICT (stream) DO UPDATE
                SET upto = greatest(p.upto, EXCLUDED.upto), updated_at = now()"""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}"),
            asyncio.create_task(self._listen(), name=f"outbox-listen-{self.schema}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.close()

    async def publish_batch(self) -> int:
        """Publish one batch and wait for its confirms; returns how many messages it
        published (0 also when another relay holds the lock)."""
        conn = await self._connection()
        try:
            rows = await conn.fetch(self._cycle, self._key, self._batch_size, True, [], [], [], [])
            if not rows[0]["held"]:
                return 0
            if rows[0]["id"] is None:
                await conn.fetchval(self._unlock, self._key)
                return 0
            crash_point("relay_before_publish")
            await self._send(rows)
            crash_point("relay_after_publish")
            positions = positions_of(rows)
            await conn.fetchval(self._record, self._key, list(positions), list(positions.values()))
        except BaseException:
            # The lock may be held: the connection goes with it.
            await self._discard()
            raise
        return len(rows)

    async def _send(self, rows: Sequence[asyncpg.Record]) -> None:
        await self._broker.publish(
            bundle(
                [
                    OutgoingMessage(
                        routing_key=row["routing_key"],
                        body=bytes(row["body"]),
                        message_id=str(row["message_id"]),
                        type=row["message_type"],
                        correlation_id=row["correlation_id"],
                        producer=self.schema,
                        stream=row["stream"],
                        sequence=row["sequence"],
                    )
                    for row in rows
                ],
                self._bundle_size,
            )
        )
        OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))

    async def _pipeline(self) -> None:
        """Publish as rows come, until something fails (then the caller starts again, and
        whatever was not recorded is published again: duplicates, which the inboxes drop)."""
        conn = await self._connection()
        held = False
        in_flight: collections.deque[_InFlight] = collections.deque()
        try:
            while True:
                if len(in_flight) >= MAX_BATCHES_IN_FLIGHT:
                    await asyncio.wait([in_flight[0].confirmed])
                confirmed = self._take_confirmed(in_flight)
                past = merge_positions(confirmed, *(batch.positions for batch in in_flight))
                rows = await conn.fetch(
                    self._cycle,
                    self._key,
                    self._batch_size,
                    not held,
                    list(confirmed),
                    list(confirmed.values()),
                    list(past),
                    list(past.values()),
                )
                self._backoff = _FIRST_BACKOFF
                held = bool(rows[0]["held"])
                if held and rows[0]["id"] is not None:
                    crash_point("relay_before_publish")
                    task = asyncio.create_task(self._send(rows))
                    task.add_done_callback(self._on_confirmed)
                    in_flight.append(_InFlight(positions_of(rows), task))
                    if len(rows) == self._batch_size:
                        continue
                elif held and not in_flight:
                    await conn.fetchval(self._unlock, self._key)
                    held = False
                woken = await self._wait_for_rows(RECORD_DELAY_SECONDS if in_flight else None)
                if not woken and in_flight:
                    # Quiet: record what was sent, let the lock go, then wait for rows.
                    await asyncio.wait([batch.confirmed for batch in in_flight])
                    confirmed = self._take_confirmed(in_flight)
                    await conn.fetchval(
                        self._record, self._key, list(confirmed), list(confirmed.values())
                    )
                    held = False
                    await self._wait_for_rows(None)
        except BaseException:
            # The lock may be held: the connection goes with it. Sends still running
            # finish on their own; nothing waits for them.
            await self._discard()
            raise

    @staticmethod
    def _take_confirmed(in_flight: "collections.deque[_InFlight]") -> Positions:
        """Where the leading batches whose confirms are in leave their streams (a nack
        raises here)."""
        confirmed: list[Positions] = []
        while in_flight and in_flight[0].confirmed.done():
            batch = in_flight.popleft()
            batch.confirmed.result()
            confirmed.append(batch.positions)
        return merge_positions(*confirmed)

    async def _wait_for_rows(self, timeout: float | None) -> bool:
        """Wait for a committed insert's NOTIFY (or a failed send); False when ``timeout``
        (by default the poll interval, the safety net for a NOTIFY missed) passed first."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout or self._poll_seconds)
        except TimeoutError:
            return False
        finally:
            self._wake.clear()
        return True

    def _on_confirmed(self, task: "asyncio.Task[None]") -> None:
        # A confirm does not wake the relay: its positions are recorded by its next read, which
        # new rows' NOTIFY brings (or, when none come, after RECORD_DELAY_SECONDS). A failed
        # send does, so that the pipeline fails and starts again at once.
        if not task.cancelled() and task.exception() is not None:
            self._wake.set()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                server_settings=RELAY_SESSION_SETTINGS
                | {"application_name": f"{self.schema}-relay"},
            )
        return self._conn

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Close the relay's connection (and so release its lock, were it held)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run(self) -> None:
        await self._broker.wait_connected()
        while True:
            try:
                await self._pipeline()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                RELAY_ERRORS.labels(self.schema).inc()
                log.warning("outbox relay failed; will retry", extra={"error": repr(exc)})
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 2.0)

    async def _listen(self) -> None:
        """Wake the relay on every committed outbox insert (statement-level NOTIFY trigger)."""
        await listen_forever(
            self._dsn,
            notify_channel(self.schema),
            lambda *_: self._wake.set(),
            on_connect=self._wake.set,  # inserts made while disconnected notified nobody
        )
