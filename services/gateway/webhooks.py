"""Signed callbacks to partners, persisted so none is lost across a restart.

Events are written to ``gateway.webhook_deliveries`` in the same transaction as the view
change that causes them (an outbox of callbacks). A background task POSTs each due one,
signed with the partner's secret exactly like a partner's request (X-Api-Key,
X-Timestamp, X-Signature over the target's path), and retries with exponential backoff
until the receiver answers 2xx. Each event carries an ``event_id`` for de-duplication.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway import repositories as repo
from services.gateway.auth import signed_headers
from services.gateway.models import partners, webhook_deliveries, webhooks
from services.gateway.secrets_box import SecretBox
from services.gateway.settings import GatewaySettings
from shared.clock import rfc3339, utc_now
from shared.driver import Tx
from shared.ids import new_id

log = logging.getLogger(__name__)

#: A claimed delivery is retried by anyone after this long (its sender died mid-flight).
LEASE_SECONDS = 120
BATCH = 50


Event = tuple[str, str, dict[str, Any]]  # (partner_id, event type, data)


async def enqueue(session: Tx, events: Sequence[Event]) -> int:
    """Queue each event for every webhook of its partner subscribed to its type."""
    if not events:
        return 0
    hooks_of = await repo.webhooks_of(session, {partner_id for partner_id, _, _ in events})
    if not hooks_of:
        return 0
    now = utc_now()
    rows = []
    for partner_id, event_type, data in events:
        for webhook_id, subscribed in hooks_of.get(partner_id, ()):
            if event_type not in subscribed:
                continue
            event_id = new_id("ev")
            body = orjson.dumps(
                {"event_id": event_id, "type": event_type, "created_at": rfc3339(now), "data": data}
            )
            rows.append(
                {
                    "event_id": event_id,
                    "webhook_id": webhook_id,
                    "partner_id": partner_id,
                    "event_type": event_type,
                    "body": body,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    await repo.insert_deliveries(session, rows)
    return len(rows)


def path_with_query(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


class WebhookDeliverer:
    def __init__(
        self,
        settings: GatewaySettings,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        box: SecretBox,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._box = box
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._settings.webhook_timeout_seconds)
        self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery round failed")
                sent = 0
            if sent >= BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.webhook_poll_seconds)
            self._wake.clear()

    async def deliver_due(self) -> int:
        now = utc_now()
        async with self._sessions()() as session, session.begin():
            rows = (
                await session.execute(
                    select(
                        webhook_deliveries.c.id,
                        webhook_deliveries.c.event_id,
                        webhook_deliveries.c.event_type,
                        webhook_deliveries.c.body,
                        webhook_deliveries.c.attempts,
                        webhook_deliveries.c.webhook_id,
                        partners.c.api_key,
                        partners.c.secret_ciphertext,
                        webhooks.c.url,
                    )
                    .select_from(
                        webhook_deliveries.join(
                            partners, partners.c.partner_id == webhook_deliveries.c.partner_id
                        ).join(webhooks, webhooks.c.webhook_id == webhook_deliveries.c.webhook_id)
                    )
                    .where(
                        webhook_deliveries.c.delivered_at.is_(None),
                        webhook_deliveries.c.next_attempt_at <= now,
                    )
                    .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
                    .limit(BATCH)
                    .with_for_update(of=webhook_deliveries, skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_([r.id for r in rows]))
                .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
            )
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _deliver(self, row: Any) -> None:
        assert self._http is not None
        body = bytes(row.body)
        status: int | None = None
        error: str | None = None
        try:
            secret = self._box.decrypt(row.secret_ciphertext, bound_to=row.api_key)
            headers = signed_headers(row.api_key, secret, "POST", path_with_query(row.url), body)
            headers.update(
                {
                    "Content-Type": "application/json",
                    "X-Event-Id": row.event_id,
                    "X-Event-Type": row.event_type,
                }
            )
            response = await self._http.post(row.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"answered {status}"
        except Exception as exc:
            error = repr(exc)[:500]
        attempts = int(row.attempts) + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if error is None:
            values["delivered_at"] = utc_now()
        else:
            delay = min(
                self._settings.webhook_backoff_seconds * 2 ** (attempts - 1),
                self._settings.webhook_backoff_max_seconds,
            )
            values["next_attempt_at"] = utc_now() + timedelta(seconds=delay)
            log.info(
                "webhook delivery failed; will retry",
                extra={
                    "event_id": row.event_id,
                    "attempts": attempts,
                    "retry_in": delay,
                    "error": error,
                },
            )
        async with self._sessions()() as session, session.begin():
            await session.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == row.id).values(**values)
            )
