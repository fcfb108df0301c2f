"""A route's database transaction, as a FastAPI dependency.

Scoped to the route function (``scope="function"``): the transaction commits before the
answer is sent. With FastAPI's default request scope it would commit after the answer
had gone out, so a caller could be told 201 for a write that then failed to commit, and
could read the old state straight after a success.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.runtime import ServiceRuntime


async def route_transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """Committed when the route returns, rolled back when it raises."""
    runtime: ServiceRuntime = request.app.state.runtime
    async with runtime.session_factory() as session, session.begin():
        yield session


RouteSession = Annotated[AsyncSession, Depends(route_transaction, scope="function")]
