"""Making PostgreSQL refuse every insert into a table for a while, to test what a
service does when its commits fail: a trigger raises, and a sequence counts the refusals
(unlike a row, a sequence's increments survive the rollback)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


class Refusals:
    def __init__(self, engine: AsyncEngine, table: str) -> None:
        self._engine = engine
        self.table = table
        schema, name = table.split(".")
        self._function = f"{schema}.refuse_{name}"
        self._sequence = f"{schema}.refusals_{name}"
        self._trigger = f"refuse_{name}"
        self.active = False

    async def start(self, sqlstate: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(text(f"CREATE SEQUENCE {self._sequence}"))
            await conn.execute(
                text(
                    f"CREATE FUNCTION {self._function}() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN PERFORM nextval('{self._sequence}'); "
                    f"RAISE EXCEPTION 'insert into {self.table} refused by the test' "
                    f"USING ERRCODE = '{sqlstate}'; END $$"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TRIGGER {self._trigger} BEFORE INSERT ON {self.table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {self._function}()"
                )
            )
        self.active = True

    async def count(self) -> int:
        """How many inserts were refused so far."""
        async with self._engine.connect() as conn:
            refused = await conn.scalar(
                text(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {self._sequence}")
            )
        return int(refused or 0)

    async def lift(self) -> None:
        """Inserts work again."""
        if not self.active:
            return
        async with self._engine.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER {self._trigger} ON {self.table}"))
            await conn.execute(text(f"DROP FUNCTION {self._function}()"))
            await conn.execute(text(f"DROP SEQUENCE {self._sequence}"))
        self.active = False


@asynccontextmanager
async def refused_inserts(
    engine: AsyncEngine, table: str, *, sqlstate: str = "P0001"
) -> AsyncIterator[Refusals]:
    """Every insert into ``table`` (``schema.name``) fails with ``sqlstate`` until the
    block ends or ``lift()`` is called. The default, P0001 (raise_exception), is a fault
    no retry gets past; 40001 (serialization_failure) is one a retry does."""
    refusals = Refusals(engine, table)
    await refusals.start(sqlstate)
    try:
        yield refusals
    finally:
        await refusals.lift()
