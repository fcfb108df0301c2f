"""A route's transaction commits before its answer is sent, on the real database."""

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import make_session_factory
from shared.errors import install_problem_handlers
from shared.transaction import RouteSession

SCHEMA = """
DROP TABLE IF EXISTS route_tx_rows;
CREATE TABLE route_tx_rows (value text PRIMARY KEY);
CREATE FUNCTION route_tx_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON route_tx_rows
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.value = 'refused')
    EXECUTE FUNCTION route_tx_refuse();
"""


class VisibilityAtAnswer:
    """Records, as each answer starts, whether the row the request wrote can be read
    from another connection (that is, whether its transaction had committed)."""

    def __init__(self, app: ASGIApp, engine: AsyncEngine) -> None:
        self.app = app
        self.engine = engine
        self.seen: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = str(scope["path"]).rsplit("/", 1)[-1]

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                async with self.engine.connect() as conn:
                    found = await conn.execute(
                        text("SELECT 1 FROM route_tx_rows WHERE value = :v"), {"v": value}
                    )
                    self.seen[value] = found.first() is not None
            await send(message)

        await self.app(scope, receive, answer)


@pytest.fixture
async def table(engine: AsyncEngine) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.execute(text("DROP FUNCTION IF EXISTS route_tx_refuse() CASCADE"))
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                await conn.execute(text(statement))
    yield
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE route_tx_rows"))
        await conn.execute(text("DROP FUNCTION route_tx_refuse()"))


@pytest.fixture
def app(engine: AsyncEngine, table: None) -> FastAPI:
    app = FastAPI()
    app.state.runtime = SimpleNamespace(session_factory=make_session_factory(engine))
    install_problem_handlers(app)

    @app.post("/rows/{value}", status_code=201)
    async def write(value: str, session: RouteSession) -> dict[str, str]:
        await session.execute(text("INSERT INTO route_tx_rows VALUES (:v)"), {"v": value})
        return {"value": value}

    return app


async def rows(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT value FROM route_tx_rows"))).scalars())


async def test_the_write_is_committed_when_its_answer_starts(
    app: FastAPI, engine: AsyncEngine
) -> None:
    probe = VisibilityAtAnswer(app, engine)
    transport = httpx.ASGITransport(app=probe)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post("/rows/kept")
    assert answer.status_code == 201
    assert probe.seen == {"kept": True}


async def test_a_commit_that_fails_is_answered_as_a_failure(
    app: FastAPI, engine: AsyncEngine
) -> None:
    probe = VisibilityAtAnswer(app, engine)
    transport = httpx.ASGITransport(app=probe, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/rows/refused")
        kept = await client.post("/rows/kept")
    assert refused.status_code == 500
    assert kept.status_code == 201
    assert await rows(engine) == {"kept"}
