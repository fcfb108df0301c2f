"""Transactions on plain asyncpg connections, for the consumers' hot paths.

An ``AsyncSession`` begun and committed around a message batch cost about 0.3 ms of client
CPU more than the same transaction on the driver (``bench.sql.overhead``), and left about
50 objects in reference cycles for the collector to find (docs/benchmarks.md). The
statements those batches run already go to the driver (``shared.sql.Statement``); a
``DriverTransaction`` gives them the little else they need of a session: its connection,
a dict for the transaction's own state, and callbacks once it has committed.
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)


class DriverTransaction:
    """One transaction on an asyncpg connection (see ``DriverPool.transaction``)."""

    __slots__ = ("_after_commit", "connection", "info")

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        #: The transaction's own state, like ``AsyncSession.info`` for a session that
        #: lives for one transaction.
        self.info: dict[str, Any] = {}
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    def committed(self) -> None:
        for callback in self._after_commit:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")


#: What the hot paths run in: a session's transaction or a driver transaction.
Tx = AsyncSession | DriverTransaction


def after_commit(tx: Tx, callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``tx`` has committed, on either kind of transaction."""
    if isinstance(tx, DriverTransaction):
        tx.after_commit(callback)
        return

    def committed(_: object) -> None:
        callback()

    sa_event.listen(tx.sync_session, "after_commit", committed, once=True)


def orm_session(tx: Tx) -> AsyncSession:
    """The session under ``tx``, for code that needs SQLAlchemy itself; a driver
    transaction has none (its consumer must route such messages to a session)."""
    if isinstance(tx, DriverTransaction):
        raise TypeError("this step needs an AsyncSession, not a driver transaction")
    return tx


async def _sqlalchemy_codecs(conn: asyncpg.Connection) -> None:
    """json and jsonb as SQLAlchemy's asyncpg dialect sets them up (text in, parsed out),
    so a statement reads the same on either kind of transaction."""

    def decode_json(value: bytes) -> Any:
        return json.loads(value.decode())

    def encode_jsonb(value: str) -> bytes:
        return b"\x01" + value.encode()

    def decode_jsonb(value: bytes) -> Any:
        return json.loads(value[1:].decode())

    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=decode_json, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb", encoder=encode_jsonb, decoder=decode_jsonb, schema="pg_catalog", format="binary"
    )


async def _keep_session(_: asyncpg.Connection) -> None:
    """Nothing to reset on release: a transaction here leaves no session state behind
    (no LISTEN, no advisory or prepared-statement state of its own), and asyncpg's own
    reset would cost a round trip per transaction."""


class PoolExhausted(Exception):
    """Every connection of a ``DriverPool`` stayed busy while a caller waited for one."""


#: As long as a caller waits for one of the pool's connections (the ORM pool's timeout).
ACQUIRE_TIMEOUT_SECONDS = 10.0


class DriverPool:
    """A small pool of plain connections, opened on first use."""

    def __init__(self, dsn: str, *, max_connections: int, application_name: str) -> None:
        self._dsn = dsn
        self._max = max_connections
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._max,
                init=_sqlalchemy_codecs,
                reset=_keep_session,
                server_settings={"application_name": self._application_name},
                timeout=5,
            )
            if self._pool is None:
                self._pool = pool
            else:  # another task opened one meanwhile
                await pool.close()
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(
        self, timeout: float = ACQUIRE_TIMEOUT_SECONDS
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool for the block; ``PoolExhausted`` when every one stays
        busy for ``timeout`` seconds."""
        pool = await self._get_pool()
        try:
            conn = await pool.acquire(timeout=timeout)
        except TimeoutError:
            raise PoolExhausted(f"no connection of {self._application_name} free") from None
        try:
            yield conn
        finally:
            await pool.release(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DriverTransaction]:
        """Committed when the block ends normally, rolled back on any error; its
        after-commit callbacks run after the commit."""
        async with self.acquire() as conn:
            tx = DriverTransaction(conn)
            async with conn.transaction():
                yield tx
        tx.committed()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
