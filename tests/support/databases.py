"""Dropping a test database, whatever still holds connections to it."""

import asyncpg

from shared.db import asyncpg_dsn, database_name


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url).rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    finally:
        await conn.close()
