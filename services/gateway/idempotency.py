"""Idempotency keys: a repeat of a POST with the same key and body replays the first answer.

Each key is claimed by inserting a unique row ``(scope, key)`` in a transaction of its
own, before the request runs; concurrent duplicates find the row and wait for the first
to finish, then replay its answer. Answers that say nothing about the request itself
(authentication, rate limit, server or downstream failures) release the claim instead,
so a retry can run again. Records are kept ``idempotency_ttl_hours`` (at least 24 h).
"""

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.models import idempotency_keys
from shared.clock import utc_now

MAX_KEY_LENGTH = 255
#: A claim nobody completed for this long belongs to a process that died.
STALE_CLAIM_SECONDS = 60.0
#: Answers not recorded: they depend on credentials, load or availability, not the request.
NOT_RECORDED = {401, 403, 429}


def request_hash(method: str, path_with_query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"{method.upper()} {path_with_query}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def should_record(status: int) -> bool:
    return status < 500 and status not in NOT_RECORDED


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["claimed", "replay", "conflict", "busy"]
    status: int = 0
    content_type: str | None = None
    body: bytes = b""


class IdempotencyStore:
    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        *,
        ttl: timedelta,
        wait_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._wait = wait_seconds

    async def claim(self, scope: str, key: str, req_hash: str) -> Outcome:
        deadline = time.monotonic() + self._wait
        delay = 0.01
        while True:
            if time.monotonic() > deadline:
                return Outcome("busy")
            now = utc_now()
            async with self._sessions()() as session, session.begin():
                claimed = (
                    await session.execute(
                        pg_insert(idempotency_keys)
                        .values(scope=scope, key=key, request_hash=req_hash, created_at=now)
                        .on_conflict_do_nothing()
                        .returning(idempotency_keys.c.key)
                    )
                ).first()
                if claimed is not None:
                    return Outcome("claimed")
                row = (
                    await session.execute(
                        select(idempotency_keys).where(
                            idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
                        )
                    )
                ).first()
                if row is None:
                    continue  # released between our insert and select: try again
                if row.created_at < now - self._ttl:
                    await session.execute(
                        delete(idempotency_keys).where(
                            idempotency_keys.c.scope == scope,
                            idempotency_keys.c.key == key,
                            idempotency_keys.c.created_at == row.created_at,
                        )
                    )
                    continue
                if row.request_hash != req_hash:
                    return Outcome("conflict")
                if row.status_code is not None:
                    return Outcome(
                        "replay", row.status_code, row.content_type, bytes(row.response_body or b"")
                    )
                stale = now - timedelta(seconds=STALE_CLAIM_SECONDS)
                taken = (
                    await session.execute(
                        update(idempotency_keys)
                        .where(
                            and_(
                                idempotency_keys.c.scope == scope,
                                idempotency_keys.c.key == key,
                                idempotency_keys.c.completed_at.is_(None),
                                idempotency_keys.c.created_at < stale,
                            )
                        )
                        .values(created_at=now)
                        .returning(idempotency_keys.c.key)
                    )
                ).first()
                if taken is not None:
                    return Outcome("claimed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def complete(
        self, scope: str, key: str, status: int, content_type: str | None, body: bytes
    ) -> None:
        async with self._sessions()() as session, session.begin():
            await session.execute(
                update(idempotency_keys)
                .where(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
                .values(
                    status_code=status,
                    content_type=content_type,
                    response_body=body,
                    completed_at=utc_now(),
                )
            )

    async def release(self, scope: str, key: str) -> None:
        async with self._sessions()() as session, session.begin():
            await session.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.scope == scope,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.completed_at.is_(None),
                )
            )

    async def purge_expired(self) -> int:
        async with self._sessions()() as session, session.begin():
            result = await session.execute(
                delete(idempotency_keys)
                .where(idempotency_keys.c.created_at < utc_now() - self._ttl)
                .returning(idempotency_keys.c.key)
            )
            return len(result.all())
