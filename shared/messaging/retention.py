"""Deleting outbox rows that were published long enough ago.

A row at or below its stream's published position (``outbox_published``) is never read by
the relay again: once older than the retention it is only history, and without pruning
the outbox grows by every message the service ever sent. The pruner walks the outbox in
id order from the oldest row, one chunk per statement (a short transaction each), deletes
the chunk's published rows older than the cutoff, and stops at the first chunk that
reaches a younger row. Rows not yet published are kept whatever their age, so a stuck
relay loses nothing.

Matching keeps its outbox: a shard's recovery compares the events it replays with the ones
it published since its snapshot (``docs/matching.md``).
"""

import asyncio
import logging
import time

import asyncpg

from shared.db import asyncpg_dsn, check_identifier
from shared.metrics import OUTBOX_PRUNED

log = logging.getLogger(__name__)

#: Rows looked at per statement.
PRUNE_CHUNK = 5000


class OutboxPruner:
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
        #: Below this id nothing is left: a run starts here, not at the first id, so it does
        #: not walk again over the rows earlier runs deleted (dead until a vacuum).
        self._floor = 0
        # $1: the last id looked at, $2: the chunk, $3: the cutoff. Every statement of a run
        # uses the run's cutoff; a chunk's rows are read in the statement's snapshot, so a
        # position recorded meanwhile only leaves rows for the next run.
        self._prune_chunk = f"""
            WITH chunk AS MATERIALIZED (
                SELECT id, stream, sequence, created_at FROM {self.schema}.outbox
                WHERE id > $1 ORDER BY id LIMIT $2
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

    async def prune(self) -> int:
        """Delete every published row older than the retention; how many were deleted."""
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": f"{self.schema}-outbox-pruner"}
        )
        try:
            cutoff = await conn.fetchval(
                "SELECT now() - make_interval(secs => $1)", self._retention_seconds
            )
            total, after = 0, self._floor
            first_kept: int | None = None
            while True:
                row = await conn.fetchrow(self._prune_chunk, after, self._chunk, cutoff)
                total += int(row["pruned"])
                if first_kept is None and row["first_kept"] is not None:
                    first_kept = int(row["first_kept"])
                if row["last_id"] is None or not row["all_old"]:
                    break
                after = int(row["last_id"])
            # Everything below the first row kept (unpublished, or the first young one) is
            # gone; when nothing was kept, everything up to the last row looked at.
            self._floor = first_kept - 1 if first_kept is not None else after
            return total
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-pruner-{self.schema}")

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
                log.warning("outbox pruning failed; will retry", extra={"error": repr(exc)})
                continue
            OUTBOX_PRUNED.labels(self.schema).inc(pruned)
            if pruned:
                log.info(
                    "outbox pruned",
                    extra={
                        "schema": self.schema,
                        "rows": pruned,
                        "seconds": round(time.perf_counter() - started, 3),
                    },
                )
