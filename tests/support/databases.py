"""Dropping a test database, whatever still holds connections to it."""

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg

from shared.db import asyncpg_dsn, database_name
from shared.migrations import ensure_database, upgrade_all
from tests.support import env


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url).rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    finally:
        await conn.close()


def fresh_database(name: str) -> str:
    """A new database of this run, migrated by the real migrations: for suites that run
    whole services, whose global state (the business date) must not leak between suites.
    Call from synchronous fixture code."""
    url = f"{env.BASE_DATABASE_URL}/exchange_test_{env.RUN_TAG}_{name}"
    asyncio.run(ensure_database(url))
    upgrade_all(url)
    return url


@contextlib.contextmanager
def own_database(name: str) -> Iterator[str]:
    """``fresh_database`` for as long as the block lasts, dropped afterwards."""
    url = fresh_database(name)
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
