"""Inbox pruning: how fast ``InboxPruner`` deletes the records its streams' positions
cover, against a plain ``DELETE`` of every record older than the cutoff on the same rows.

    .venv/bin/python -m bench.messaging.pruning [--records 1000000] [--consumers 3]

A database of its own (dropped at the end) with the services' messaging tables. Each
consumer gets ``records / consumers`` records on four streams, numbered from 1 with the
ids in time order, as a service's inbox fills; all of them older than the cutoff and
every stream's position at its last sequence but one, whose records above a gap stay.
The plain DELETE is the baseline: the same rows, a statement with nothing to check, no
chunks (one long transaction, which a running service could not afford).
"""

import argparse
import asyncio
import os
import secrets
import time

import asyncpg
from rich.console import Console

from shared.db import asyncpg_dsn, make_engine
from shared.messaging.retention import InboxPruner
from shared.migrations import ensure_database
from tests.support.databases import drop_database
from tests.support.msgtest import SCHEMA, create_schema

BASE = os.environ.get("EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
STREAMS = 4
#: The stream whose position stops short of its last records (a gap above it).
GAPPED_STREAM = "stream-0"
GAP_RECORDS = 100

console = Console()


async def fill(conn: asyncpg.Connection, records: int, consumers: int) -> tuple[int, int]:
    """Insert the records and positions; how many were inserted, and how many the pruner
    may delete."""
    per_stream = records // consumers // STREAMS
    await conn.execute(f"TRUNCATE {SCHEMA}.inbox, {SCHEMA}.inbox_stream")
    # uuid7-like ids in time order: the timestamp in the first 48 bits.
    await conn.execute(
        f"""
        INSERT INTO {SCHEMA}.inbox (consumer, message_id, stream, sequence, received_at)
        SELECT 'consumer-' || c, (lpad(to_hex(1700000000000 + n), 12, '0')
                   || '7' || lpad(to_hex(c * 16 + s), 3, '0') || '8' ||
                   lpad(to_hex(n), 15, '0'))::uuid,
               'stream-' || s, n, now() - interval '4 days' + n * interval '1 ms'
        FROM generate_series(0, $1::int - 1) AS c, generate_series(0, $2::int - 1) AS s,
             generate_series(1, $3::int) AS n
        """,
        consumers,
        STREAMS,
        per_stream,
    )
    await conn.execute(
        f"""
        INSERT INTO {SCHEMA}.inbox_stream (consumer, stream, contiguous_upto, highest_seen)
        SELECT 'consumer-' || c, 'stream-' || s,
               CASE WHEN 'stream-' || s = $4::text THEN $3::bigint - $5::bigint ELSE $3::bigint END,
               $3::bigint + 1
        FROM generate_series(0, $1::int - 1) AS c, generate_series(0, $2::int - 1) AS s
        """,
        consumers,
        STREAMS,
        per_stream,
        GAPPED_STREAM,
        GAP_RECORDS,
    )
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.inbox")
    await conn.execute(f"VACUUM ANALYZE {SCHEMA}.inbox_stream")
    inserted = consumers * STREAMS * per_stream
    return inserted, inserted - consumers * GAP_RECORDS


async def main(records: int, consumers: int) -> None:
    url = f"{BASE}/exchange_bench_prune_{secrets.token_hex(3)}"
    await ensure_database(url)
    try:
        engine = make_engine(url, pool_size=1)
        await create_schema(engine)
        await engine.dispose()
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            with console.status(f"filling {records:,} records"):
                inserted, doomed = await fill(conn, records, consumers)
            pruner = InboxPruner(
                SCHEMA, database_url=url, retention_seconds=86_400, interval_seconds=3600
            )
            with console.status("InboxPruner.prune"):
                started = time.perf_counter()
                pruned = await pruner.prune()
                pruner_seconds = time.perf_counter() - started
            assert pruned == doomed, (pruned, doomed)

            with console.status(f"filling {records:,} records again"):
                await fill(conn, records, consumers)
            with console.status("plain DELETE"):
                started = time.perf_counter()
                await conn.execute(
                    f"DELETE FROM {SCHEMA}.inbox WHERE received_at < now() - interval '1 day'"
                )
                plain_seconds = time.perf_counter() - started
        finally:
            await conn.close()
    finally:
        await drop_database(url)
    console.print(
        f"{inserted:,} records, {consumers} consumers x {STREAMS} streams "
        f"({GAP_RECORDS} above a gap per consumer kept)"
    )
    console.print(
        f"InboxPruner: {pruned:,} deleted in {pruner_seconds:.2f} s "
        f"({pruned / pruner_seconds:,.0f} records/s, chunks of 5,000)"
    )
    console.print(
        f"plain DELETE (every old record, one statement): {plain_seconds:.2f} s "
        f"({inserted / plain_seconds:,.0f} records/s); pruner / plain time "
        f"{pruner_seconds / plain_seconds:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--consumers", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.consumers))
