"""Hot statements run on the session's own asyncpg connection, inside its transaction.

SQLAlchemy's execution path (parameter processing, the greenlet hop, result wrapping) cost
about 90 µs of CPU per statement on top of asyncpg's own (183 against 92 µs measured in one
transaction; bench/ and docs/benchmarks.md). The statements every message batch runs (the
inbox, the outbox, the gateway's views, custody's batches) go straight to the driver; the
text keeps SQLAlchemy's ``:name`` parameters, so it reads like the rest.
"""

import re
from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.db import transaction_info
from shared.driver import DriverTransaction, Tx

#: ``:name``, not the second colon of a ``::type`` cast.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

_DRIVER = "shared.sql.driver_connection"


class Statement:
    """A statement with ``:name`` parameters, compiled once to asyncpg's ``$n`` form."""

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.sql = _PARAMETER.sub(number, sql)

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"statement parameters missing: {missing}")
        return [params[n] for n in self.names]

    async def fetch(self, session: Tx, **params: Any) -> Sequence[asyncpg.Record]:
        conn = await driver_connection(session)
        rows: Sequence[asyncpg.Record] = await conn.fetch(self.sql, *self.arguments(params))
        return rows

    async def execute(self, session: Tx, **params: Any) -> None:
        conn = await driver_connection(session)
        await conn.execute(self.sql, *self.arguments(params))


async def driver_connection(session: Tx) -> asyncpg.Connection:
    """The asyncpg connection under the transaction: a driver transaction's own, or the
    one under a session's transaction, the database transaction begun if it was not yet.

    SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it runs itself; a
    statement sent to the driver before that would run in autocommit, outside the
    session's transaction. So the adapter's transaction is started here, the way its own
    execution path does (SQLAlchemy is pinned in uv.lock; tests/shared/test_sql.py fails
    if this stops holding).
    """
    if isinstance(session, DriverTransaction):
        return session.connection
    cached: asyncpg.Connection | None = transaction_info(session).get(_DRIVER)
    if cached is not None:
        return cached
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapter: Any = raw.dbapi_connection
    async with adapter._execute_mutex:
        if adapter._transaction is None:
            await adapter._start_transaction()
    conn: asyncpg.Connection = raw.driver_connection
    transaction_info(session)[_DRIVER] = conn  # the transaction just begun, if it was not
    return conn
