"""Async SQLAlchemy engines, sessions and the unit of work.

Services never call ``commit()`` themselves: the request or message boundary does,
through :func:`unit_of_work`.
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.driver import DriverTransaction, Tx

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str) -> str:
    """A schema or table name that is safe to put into SQL text."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    return name


def make_engine(
    url: str, *, pool_size: int = 10, application_name: str = "exchange"
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping on every checkout (a round trip before each transaction, on every
        # message batch's path): a connection that a database restart broke fails its
        # first statement, SQLAlchemy then discards the whole pool, and the transaction
        # is retried by its caller (a consumer redelivers; a client retries its request).
        pool_pre_ping=False,
        pool_recycle=3600,
        pool_timeout=10,
        connect_args={
            "server_settings": {"application_name": application_name},
            "timeout": 5,
        },
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends normally, rolled back on any error."""
    async with factory() as session, session.begin():
        yield session


_TRANSACTION_INFO = "shared.db.transaction_info"


def transaction_info(session: Tx) -> dict[str, Any]:
    """A dict the session keeps for its current transaction only: what a transaction has
    done or holds (rows it locked, its driver connection) is forgotten with it."""
    if isinstance(session, DriverTransaction):
        return session.info
    transaction = session.sync_session.get_transaction()
    kept = session.info.get(_TRANSACTION_INFO)
    if kept is None or kept[0] is not transaction:
        kept = session.info[_TRANSACTION_INFO] = (transaction, {})
    info: dict[str, Any] = kept[1]
    return info


def asyncpg_dsn(url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg accepts, from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(url: str) -> str:
    name = make_url(url).database
    if not name:
        raise ValueError(f"no database name in {url!r}")
    return name
