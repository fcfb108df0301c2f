"""Order entry's write: the ``pending_new`` order views and their ``order.submit`` commands
in one statement, on a plain asyncpg connection.

One statement is one round trip and its own transaction (no BEGIN, no COMMIT, no pool
ping): order entry is the gateway's hottest path, and through the ORM session the same
write cost four round trips and most of a single order's CPU in the gateway. The orders
are inserted first (a ``client_order_id`` already taken is skipped), and only the orders
actually inserted get a command, with the stream's next sequence numbers, all or nothing.
"""

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg

from services.gateway.models import orders, sql_type
from shared.db import asyncpg_dsn
from shared.driver import ACQUIRE_TIMEOUT_SECONDS as DRIVER_ACQUIRE_TIMEOUT
from shared.driver import DriverPool, PoolExhausted
from shared.errors import overloaded
from shared.messaging.envelope import Envelope
from shared.messaging.outbox import placeholder_body

#: The order view's columns written at entry (all but the cancel request's time).
ORDER_COLUMNS = tuple(c.name for c in orders.columns if c.name != "cancel_requested_at")
_NAMES = ", ".join(ORDER_COLUMNS)
_ARRAYS = ", ".join(
    f"${i}::{sql_type(orders, name)}[]" for i, name in enumerate(ORDER_COLUMNS, start=1)
)
_N = len(ORDER_COLUMNS)
_M = {  # the parameters after the order columns
    "message_ids": f"${_N + 1}::uuid[]",
    "order_ids": f"${_N + 2}::text[]",
    "bodies": f"${_N + 3}::text[]",
    "correlation_ids": f"${_N + 4}::text[]",
    "stream": f"${_N + 5}::text",
    "routing_key": f"${_N + 6}::text",
    "type": f"${_N + 7}::text",
}

# Rows go in the order given (the caller sorts by client_order_id, so two batches sharing
# client_order_ids wait for each other rather than deadlock), then the stream's row.
# A data-modifying CTE runs to completion whether or not the final SELECT reads it.
INSERT_ORDERS_WITH_COMMANDS = f"""
WITH input AS (
    SELECT * FROM unnest({_ARRAYS}) WITH ORDINALITY AS r({_NAMES}, n)
), inserted AS (
    INSERT INTO gateway.orders ({_NAMES})
    SELECT {_NAMES} FROM input ORDER BY n
    ON CONFLICT (partner_id, client_order_id) DO NOTHING
    RETURNING order_id
), messages AS (
    SELECT m.message_id, m.body, m.correlation_id, row_number() OVER (ORDER BY m.n) AS k
    FROM unnest({_M["message_ids"]}, {_M["order_ids"]}, {_M["bodies"]},
                {_M["correlation_ids"]})
         WITH ORDINALITY AS m(message_id, order_id, body, correlation_id, n)
    WHERE m.order_id IN (SELECT order_id FROM inserted)
), allocated AS (
    INSERT INTO gateway.outbox_stream AS s (stream, last_sequence)
    SELECT {_M["stream"]}, count(*) FROM messages HAVING count(*) > 0
    ON CONFLICT (stream) DO UPDATE SET last_sequence = s.last_sequence + EXCLUDED.last_sequence
    RETURNING last_sequence - (SELECT count(*) FROM messages) AS base
), written AS (
    INSERT INTO gateway.outbox
        (message_id, stream, sequence, routing_key, message_type, correlation_id, body)
    SELECT m.message_id, {_M["stream"]}, a.base + m.k, {_M["routing_key"]}, {_M["type"]},
           m.correlation_id,
           convert_to(
               regexp_replace(m.body, '"sequence":-1', '"sequence":' || (a.base + m.k)), 'UTF8'
           )
    FROM messages m CROSS JOIN allocated a
    ORDER BY m.k
    RETURNING 1
)
SELECT order_id FROM inserted
"""

ORDERS_BY_CLIENT_IDS = (
    f"SELECT {', '.join(c.name for c in orders.columns)} FROM gateway.orders "
    "WHERE partner_id = $1 AND client_order_id = ANY($2::text[])"
)


#: As long as a request waits for one of the pool's connections (read at each request).
ACQUIRE_TIMEOUT_SECONDS = DRIVER_ACQUIRE_TIMEOUT


class OrderWrites:
    """A small pool of plain connections for order entry, opened on first use."""

    def __init__(self, database_url: str, *, max_connections: int) -> None:
        self._pool = DriverPool(
            asyncpg_dsn(database_url),
            max_connections=max_connections,
            application_name="gateway-orders",
        )

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection, or 503 when every one stays busy (overload: nothing was written)."""
        try:
            async with self._pool.acquire(ACQUIRE_TIMEOUT_SECONDS) as conn:
                yield conn
        except PoolExhausted:
            raise overloaded() from None

    async def close(self) -> None:
        await self._pool.close()

    async def insert(
        self,
        rows: Sequence[dict[str, Any]],
        commands: Sequence[Envelope],
        *,
        routing_key: str,
    ) -> set[str]:
        """Insert the order rows (in the order given) and, for each order inserted, its
        command (``commands[i]`` belongs to ``rows[i]``, all on one stream); the ids of
        the orders inserted."""
        assert commands
        assert len(rows) == len(commands)
        stream = commands[0].stream
        assert all(c.stream == stream for c in commands)
        args: list[Any] = [[row[name] for row in rows] for name in ORDER_COLUMNS]
        args += [
            [c.message_id for c in commands],
            [row["order_id"] for row in rows],
            [placeholder_body(c) for c in commands],
            [c.correlation_id for c in commands],
            stream,
            routing_key,
            commands[0].type,
        ]
        async with self._acquire() as conn:
            records = await conn.fetch(INSERT_ORDERS_WITH_COMMANDS, *args)
        return {str(r["order_id"]) for r in records}

    async def by_client_ids(
        self, partner_id: str, client_order_ids: set[str]
    ) -> dict[str, SimpleNamespace]:
        """The partner's orders of these client_order_ids, as rows with attributes."""
        if not client_order_ids:
            return {}
        async with self._acquire() as conn:
            records = await conn.fetch(ORDERS_BY_CLIENT_IDS, partner_id, sorted(client_order_ids))
        return {str(r["client_order_id"]): SimpleNamespace(**dict(r)) for r in records}
