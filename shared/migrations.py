"""Alembic migrations, one history per service, each service in its own schema."""

import asyncio
from pathlib import Path

import asyncpg
from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import asyncpg_dsn, check_identifier, database_name

SERVICES = ("gateway", "custody", "matching", "clearing")
_SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, database_url: str) -> Config:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    config = Config()
    config.set_main_option("script_location", str(_SERVICES_DIR / service / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["schema"] = service
    return config


async def ensure_database(database_url: str) -> bool:
    """Create the database if it does not exist. Returns True when it was created."""
    name = check_identifier(database_name(database_url))
    admin_dsn = asyncpg_dsn(database_url).rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Bring one service's schema to `revision`. Call from synchronous code only."""
    command.upgrade(alembic_config(service, database_url), revision)


def upgrade_all(database_url: str) -> None:
    asyncio.run(ensure_database(database_url))
    for service in SERVICES:
        upgrade(service, database_url)


def run_env() -> None:
    """The body of every service's ``migrations/env.py``."""
    config = context.config
    schema = check_identifier(config.attributes["schema"])
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None

    def run(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            version_table_schema=schema,
            include_schemas=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.begin() as connection:
                # Two processes migrating at once queue here instead of racing.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema}
                )
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())
