"""Custody fixtures: settings for this run and a session factory on the test database."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody.settings import CustodySettings
from shared.db import make_session_factory
from tests.custody.helpers import custody_settings


@pytest.fixture(scope="session")
def settings(database_url: str) -> CustodySettings:
    return custody_settings()


@pytest.fixture(scope="session")
def factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)
