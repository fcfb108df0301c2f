"""Session-wide fixtures: a fresh database migrated by the real migrations, and a broker
namespace of this run's own, both removed at the end."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.migrations import ensure_database, upgrade_all
from tests.support import env
from tests.support.broker_admin import delete_broker_namespace
from tests.support.databases import drop_database


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    asyncio.run(ensure_database(env.DATABASE_URL))
    upgrade_all(env.DATABASE_URL)
    yield env.DATABASE_URL
    asyncio.run(drop_database(env.DATABASE_URL))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def broker_namespace() -> AsyncIterator[str]:
    """This run's broker prefix; every queue and exchange under it is deleted at the end."""
    yield env.BROKER_PREFIX
    await delete_broker_namespace(env.BROKER_PREFIX)
