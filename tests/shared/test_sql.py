"""Statements sent to the driver under a session: in its transaction, never beside it."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_session_factory
from shared.ids import uuid7
from shared.sql import Statement

INSERT = Statement("INSERT INTO sqltest (k, v) VALUES (:k, CAST(:v AS bigint)) RETURNING v::text")
COUNT = Statement("SELECT count(*) FROM sqltest WHERE k = :k")


def test_named_parameters_become_numbered_once_each() -> None:
    statement = Statement("SELECT CAST(:a AS int), :b::text, :a, x::bigint, '12:30' WHERE y = :b_c")
    assert statement.sql == "SELECT CAST($1 AS int), $2::text, $1, x::bigint, '12:30' WHERE y = $3"
    assert statement.arguments({"a": 1, "b": "2", "b_c": 3, "unused": 4}) == [1, "2", 3]
    with pytest.raises(KeyError):
        statement.arguments({"a": 1})


@pytest.fixture
async def table(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS sqltest (k text, v bigint)"))
    return engine


async def count(engine: AsyncEngine, key: str) -> int:
    async with make_session_factory(engine)() as session:
        return int((await COUNT.fetch(session, k=key))[0][0])


async def test_a_statement_as_the_first_of_a_transaction_rolls_back_with_it(
    table: AsyncEngine,
) -> None:
    key = str(uuid7())
    factory = make_session_factory(table)
    async with factory() as session:
        transaction = await session.begin()
        assert [r[0] for r in await INSERT.fetch(session, k=key, v=7)] == ["7"]
        await transaction.rollback()
    assert await count(table, key) == 0


async def test_statements_and_the_sessions_own_share_one_transaction(table: AsyncEngine) -> None:
    key = str(uuid7())
    factory = make_session_factory(table)
    async with factory() as session, session.begin():
        await session.execute(text("INSERT INTO sqltest (k, v) VALUES (:k, 1)"), {"k": key})
        await INSERT.execute(session, k=key, v=2)
        seen = await session.scalar(text("SELECT sum(v) FROM sqltest WHERE k = :k"), {"k": key})
        assert seen == 3
    async with factory() as session, session.begin():
        await INSERT.execute(session, k=key, v=4)
        await session.rollback()
    assert await count(table, key) == 2
