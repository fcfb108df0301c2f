"""The journal and snapshots of the matching shards, in PostgreSQL."""

import gc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.matching.engine import ShardEngine
from shared.contracts import book_stream
from shared.driver import Tx
from shared.sql import Statement


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    message_id: str
    executed_at: str
    command: dict[str, Any]


_HEAD_SQL = (
    "SELECT coalesce(max(seq), 0) FROM matching.journal WHERE shard = CAST(:shard AS integer)"
)
_HEAD = Statement(_HEAD_SQL)
#: The shard's head and which of a batch's commands it has already executed, in one round.
_HEAD_AND_KNOWN = Statement(
    f"SELECT ({_HEAD_SQL}), "
    "ARRAY(SELECT message_id::text FROM matching.journal "
    "WHERE message_id = ANY(CAST(:ids AS uuid[])))"
)
#: A batch's entries in one statement (one row per command was one round of the driver each).
_APPEND = Statement(
    "INSERT INTO matching.journal (shard, seq, message_id, executed_at, command) "
    "SELECT CAST(:shard AS integer), v.seq, v.message_id, v.executed_at, v.command "
    "FROM unnest(CAST(:seqs AS bigint[]), CAST(:message_ids AS uuid[]), "
    "CAST(:executed AS text[]), CAST(:commands AS bytea[])) "
    "AS v(seq, message_id, executed_at, command)"
)
_READ = Statement(
    "SELECT seq, message_id::text, executed_at, command FROM matching.journal "
    "WHERE shard = :shard AND seq > :after AND seq <= :upto ORDER BY seq LIMIT :limit"
)
_LATEST_SNAPSHOT = Statement(
    "SELECT head, books_hash, state FROM matching.snapshots "
    "WHERE shard = :shard AND head <= :upto ORDER BY head DESC LIMIT 1"
)
_SAVE_SNAPSHOT = text(
    "INSERT INTO matching.snapshots (shard, head, books_hash, state) "
    "VALUES (:shard, :head, :books_hash, :state) ON CONFLICT DO NOTHING"
)
_PRUNE_SNAPSHOTS = text(
    "DELETE FROM matching.snapshots WHERE shard = :shard AND head < ("
    "  SELECT min(head) FROM (SELECT head FROM matching.snapshots WHERE shard = :shard"
    "  ORDER BY head DESC LIMIT :keep) AS kept)"
)
_PUBLISHED = Statement(
    "SELECT sequence, body FROM matching.outbox WHERE stream = :stream "
    "AND sequence > :after AND sequence <= :upto ORDER BY sequence"
)


async def journal_head(session: Tx, shard: int) -> int:
    return int((await _HEAD.fetch(session, shard=shard))[0][0])


async def head_and_known(
    session: Tx, shard: int, message_ids: Sequence[str]
) -> tuple[int, set[str]]:
    """The journal's head of ``shard`` and those of ``message_ids`` already in the journal."""
    head, known = (await _HEAD_AND_KNOWN.fetch(session, shard=shard, ids=list(message_ids)))[0]
    return int(head), set(known)


async def append(session: Tx, shard: int, entries: Sequence[JournalEntry]) -> None:
    await _APPEND.execute(
        session,
        shard=shard,
        seqs=[e.seq for e in entries],
        message_ids=[e.message_id for e in entries],
        executed=[e.executed_at for e in entries],
        commands=[orjson.dumps(e.command) for e in entries],
    )


async def read_journal(
    session: Tx, shard: int, after: int, upto: int, chunk: int = 5000
) -> AsyncIterator[JournalEntry]:
    while after < upto:
        rows = await _READ.fetch(session, shard=shard, after=after, upto=upto, limit=chunk)
        if not rows:
            return
        for seq, message_id, executed_at, command in rows:
            yield JournalEntry(seq, message_id, executed_at, orjson.loads(command))
        after = rows[-1][0]


class SnapshotCorrupt(RuntimeError):
    pass


async def load_snapshot(session: Tx, shard: int, upto: int) -> ShardEngine:
    """The newest snapshot at or before `upto`, checked against its recorded hash."""
    rows = await _LATEST_SNAPSHOT.fetch(session, shard=shard, upto=upto)
    if not rows:
        return ShardEngine(shard)
    head, books_hash, state = rows[0]
    engine = ShardEngine.restore(orjson.loads(state))
    if engine.head != head or engine.books_hash() != books_hash:
        raise SnapshotCorrupt(f"snapshot of shard {shard} at {head} does not match its hash")
    return engine


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    shard: int
    head: int
    books_hash: str
    state: bytes


def snapshot_row(engine: ShardEngine) -> SnapshotRow:
    """The engine's snapshot as it is stored: its JSON and its books' hash, from one
    ``snapshot()``. Its objects (a list per resting order) are freed before this returns,
    and the collector does not run meanwhile: were it to, it would traverse every one of
    them (15-50 ms for a shard of 10,000+ orders, measured in the service)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        state = engine.snapshot()
        row = SnapshotRow(
            engine.shard,
            engine.head,
            ShardEngine.books_hash_of(state["books"]),
            orjson.dumps(state),
        )
        del state
        return row
    finally:
        if paused:
            gc.enable()


async def save_snapshot(session: AsyncSession, row: SnapshotRow, keep: int = 3) -> None:
    """Save a shard's snapshot and drop all but the ``keep`` newest."""
    await session.execute(
        _SAVE_SNAPSHOT,
        {"shard": row.shard, "head": row.head, "books_hash": row.books_hash, "state": row.state},
    )
    await session.execute(_PRUNE_SNAPSHOTS, {"shard": row.shard, "keep": keep})


async def published_payloads(
    session: Tx, instrument: str, after: int, upto: int
) -> list[tuple[int, dict[str, Any]]]:
    rows = await _PUBLISHED.fetch(session, stream=book_stream(instrument), after=after, upto=upto)
    return [(seq, orjson.loads(body)["payload"]) for seq, body in rows]
