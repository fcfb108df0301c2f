"""Deleting messaging rows that are only history: published outbox rows, and inbox
records that their stream's position covers, once older than the retention.

**Outbox.** A row at or below its stream's published position (``outbox_published``) is
never read by the relay again: once older than the retention it is only history, and
without pruning the outbox grows by every message the service ever sent. The pruner walks
the outbox in id order from the oldest row, one chunk per statement (a short transaction
each), deletes the chunk's published rows older than the cutoff, and stops at the first
chunk that reaches a younger row. Rows not yet published are kept whatever their age, so a
stuck relay loses nothing.

Matching keeps its outbox: a shard's recovery compares the events it replays with the ones
it published since its snapshot (``docs/matching.md``).

**Inbox.** A consumer recognises a message it applied before by its id, or by a sequence
at or below its stream's contiguous position (``Inbox``): every message up to that
position was applied. Ids are recorded only where the position cannot speak for them (a
message past a gap, or among a stream's first), and once the position covers them they are
only history: the pruner deletes them once older than the retention, walking each
consumer's records in id order (UUIDv7s, so time order) the same way. A record above a gap
is kept whatever its age: it is how the consumer knows that message is applied until the
gap closes.
"""

import asyncio
import logging
import time
from datetime import datetime
from typing import Any, ClassVar

import asyncpg
from prometheus_client import Counter

from shared.db import asyncpg_dsn, check_identifier
from shared.metrics import INBOX_PRUNED, OUTBOX_PRUNED

log = logging.getLogger(__name__)

#: Rows looked at per statement.
PRUNE_CHUNK = 5000


class _Pruner:
    """Deletes rows past the retention every interval, in the background, until stopped.
    A run computes one cutoff and hands it, with a connection of its own, to ``_prune``."""

    #: What is pruned (in task, connection and log names), and the metric counting it.
    kind: ClassVar[str]
    counter: ClassVar[Counter]

    def __init__(
        self,
        schema: str,
        *,
        database_url: str,
        retention_seconds: float,
        interval_seconds: float,
        chunk: int = PRUNE_CHUNK,
    ) -> None:
        self.schema = check_identifier(schema)
        self._dsn = asyncpg_dsn(database_url)
        self._retention_seconds = retention_seconds
        self._interval_seconds = interval_seconds
        self._chunk = chunk
        self._task: asyncio.Task[None] | None = None
        #: Per walk (one a table, or one a consumer), the first row the last run kept: a
        #: run starts there, not at the first id, so it does not walk again over the rows
        #: earlier runs deleted (dead until a vacuum).
        self._floors: dict[str, Any] = {}
        #: The chunk statement, for the first chunk of a run (">=": from the floor) and the
        #: rest (">": past the last row looked at). Its parameters: the walk's own, then
        #: where the chunk starts, the chunk's size and the cutoff. It deletes the chunk's
        #: rows that may go and answers how many it deleted, the first row it kept, the last
        #: row it looked at and whether all its rows were older than the cutoff.
        self._prune_chunk = {op: self._chunk_sql(op) for op in (">=", ">")}

    def _chunk_sql(self, op: str) -> str:
        raise NotImplementedError

    async def prune(self) -> int:
        """Delete every row past the retention that may go; how many were deleted."""
        conn = await asyncpg.connect(
            self._dsn,
            server_settings={"application_name": f"{self.schema}-{self.kind}-pruner"},
        )
        try:
            cutoff = await conn.fetchval(
                "SELECT now() - make_interval(secs => $1)", self._retention_seconds
            )
            return await self._prune(conn, cutoff)
        finally:
            await conn.close()

    async def _prune(self, conn: asyncpg.Connection, cutoff: datetime) -> int:
        raise NotImplementedError

    async def _walk(
        self, conn: asyncpg.Connection, cutoff: datetime, walk: str, first: Any, *args: Any
    ) -> int:
        """One walk of a run: chunk after chunk in id order from the walk's floor (``first``
        the first time), up to the first chunk holding a row younger than the cutoff; how
        many rows it deleted."""
        total, start, op = 0, self._floors.get(walk, first), ">="
        first_kept: Any = None
        while True:
            row = await conn.fetchrow(self._prune_chunk[op], *args, start, self._chunk, cutoff)
            total += int(row["pruned"])
            if first_kept is None and row["first_kept"] is not None:
                first_kept = row["first_kept"]
            if row["last_id"] is None:
                break
            start, op = row["last_id"], ">"
            if not row["all_old"]:
                break
        # Everything before the first row kept (one that may not go yet, or the first young
        # one) is gone; when nothing was kept, everything up to the last row looked at.
        if first_kept is not None:
            self._floors[walk] = first_kept
        elif op == ">":
            self._floors[walk] = start
        return total

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.kind}-pruner-{self.schema}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_seconds)
            started = time.perf_counter()
            try:
                pruned = await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(f"{self.kind} pruning failed; will retry", extra={"error": repr(exc)})
                continue
            self.counter.labels(self.schema).inc(pruned)
            if pruned:
                log.info(
                    f"{self.kind} pruned",
                    extra={
                        "schema": self.schema,
                        "rows": pruned,
                        "seconds": round(time.perf_counter() - started, 3),
                    },
                )


class OutboxPruner(_Pruner):
    kind = "outbox"
    counter = OUTBOX_PRUNED

    def _chunk_sql(self, op: str) -> str:
        # $1: where the chunk starts, $2: the chunk, $3: the cutoff. Every statement of a
        # run uses the run's cutoff; a chunk's rows are read in the statement's snapshot, so
        # a position recorded meanwhile only leaves rows for the next run.
        return f"""
            WITH chunk AS MATERIALIZED (
                SELECT id, stream, sequence, created_at FROM {self.schema}.outbox
                WHERE id {op} $1 ORDER BY id LIMIT $2
            ), doomed AS (
                SELECT c.id FROM chunk c
                JOIN {self.schema}.outbox_published p
                  ON p.stream = c.stream AND c.sequence <= p.upto
                WHERE c.created_at < $3
            ), pruned AS (
                DELETE FROM {self.schema}.outbox o
                WHERE o.id = ANY(ARRAY(SELECT id FROM doomed))
                RETURNING o.id
            )
            SELECT (SELECT count(*) FROM pruned) AS pruned,
                   (SELECT min(id) FROM chunk WHERE id NOT IN (SELECT id FROM pruned))
                       AS first_kept,
                   (SELECT max(id) FROM chunk) AS last_id,
                   coalesce((SELECT bool_and(created_at < $3) FROM chunk), false) AS all_old
            """

    async def _prune(self, conn: asyncpg.Connection, cutoff: datetime) -> int:
        """Delete every published row older than the cutoff."""
        return await self._walk(conn, cutoff, "outbox", 0)


_NO_ID = "00000000-0000-0000-0000-000000000000"


class InboxPruner(_Pruner):
    """Deletes inbox records older than the retention whose sequence is at or below their
    stream's contiguous position, consumer by consumer."""

    kind = "inbox"
    counter = INBOX_PRUNED

    def _chunk_sql(self, op: str) -> str:
        # $1: the consumer, $2: where the chunk starts, $3: the chunk, $4: the cutoff. A
        # chunk's records and positions are read in the statement's snapshot: a position
        # moved meanwhile only leaves records for the next run. The rows are deleted by
        # their ctid, read in the same statement (2.5 times faster than by key:
        # bench/messaging/pruning.py). uuid has no min or max, hence the ORDER BY ... LIMIT 1.
        return f"""
            WITH chunk AS MATERIALIZED (
                SELECT ctid, message_id, stream, sequence, received_at FROM {self.schema}.inbox
                WHERE consumer = $1 AND message_id {op} $2::uuid
                ORDER BY message_id LIMIT $3
            ), doomed AS (
                SELECT c.ctid FROM chunk c
                JOIN {self.schema}.inbox_stream p
                  ON p.consumer = $1 AND p.stream = c.stream AND c.sequence <= p.contiguous_upto
                WHERE c.received_at < $4
            ), pruned AS (
                DELETE FROM {self.schema}.inbox i
                WHERE i.ctid = ANY(ARRAY(SELECT ctid FROM doomed))
                RETURNING i.message_id
            )
            SELECT (SELECT count(*) FROM pruned) AS pruned,
                   (SELECT message_id FROM chunk
                    WHERE message_id NOT IN (SELECT message_id FROM pruned)
                    ORDER BY message_id LIMIT 1) AS first_kept,
                   (SELECT message_id FROM chunk ORDER BY message_id DESC LIMIT 1) AS last_id,
                   coalesce((SELECT bool_and(received_at < $4) FROM chunk), false) AS all_old
            """

    async def _prune(self, conn: asyncpg.Connection, cutoff: datetime) -> int:
        """Delete every covered record older than the cutoff, consumer by consumer."""
        total = 0
        for (consumer,) in await conn.fetch(
            f"SELECT DISTINCT consumer FROM {self.schema}.inbox_stream"
        ):
            total += await self._walk(conn, cutoff, consumer, _NO_ID, consumer)
        return total
