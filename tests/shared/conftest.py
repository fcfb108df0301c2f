"""Fixtures of the shared library's tests."""

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.msgtest import create_schema


@pytest.fixture
async def msg_engine(engine: AsyncEngine) -> AsyncEngine:
    """The test database with a fresh msgtest schema (outbox, inbox, effects)."""
    await create_schema(engine)
    return engine
