"""The gateway's composition root: everything a route or a background task needs."""

import asyncio
import contextlib
import logging
from datetime import date, timedelta
from typing import Any

import orjson
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway import repositories as repo
from services.gateway.auth import Authenticator
from services.gateway.clients import Downstream
from services.gateway.consumers import ViewUpdater, needs_session
from services.gateway.idempotency import IdempotencyStore
from services.gateway.order_writes import OrderWrites
from services.gateway.orders import OrderService
from services.gateway.ratelimit import RateLimiter
from services.gateway.refdata import ReferenceData
from services.gateway.settings import GatewaySettings
from services.gateway.webhooks import WebhookDeliverer
from services.gateway.ws import Hub, PendingPushes
from shared.contracts import system_queues
from shared.db import asyncpg_dsn
from shared.notify import listen_forever
from shared.runtime import ConsumerSpec, ServiceRuntime

log = logging.getLogger(__name__)

EVENTS_QUEUE = "gateway.events"
WS_CHANNEL = "gateway_ws"


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        updater = ViewUpdater(
            self._after_commit,
            self._instrument_changed,
            notify_channel=WS_CHANNEL if settings.ws_fanout == "postgres" else None,
        )
        queue = next(q for q in system_queues(settings.matching_shards) if q.name == EVENTS_QUEUE)
        self.runtime = GatewayRuntime(
            self,
            [
                ConsumerSpec(
                    "views",
                    queue,
                    updater.handle,
                    max_batch=500,
                    batch_begin=updater.begin,
                    batch_end=updater.end,
                    driver=True,
                    needs_session=needs_session,
                )
            ],
        )
        self.auth = Authenticator(settings, self.sessions)
        self.limiter = RateLimiter()
        self.idempotency = IdempotencyStore(
            self.sessions,
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            wait_seconds=settings.idempotency_wait_seconds,
        )
        self.downstream = Downstream(
            settings.url_of("custody"),
            settings.url_of("matching"),
            settings.url_of("clearing"),
            timeout=settings.downstream_timeout_seconds,
        )
        self.refdata = ReferenceData(self.downstream)
        self.order_writes = OrderWrites(
            settings.database_url, max_connections=settings.db_pool_size
        )
        self.orders = OrderService(
            self.refdata, self.runtime.outbox, self.sessions, self.order_writes
        )
        self.hub = Hub()
        self.hub.depth_source = self._depth
        self.webhooks = WebhookDeliverer(settings, self.sessions, self.auth.box)
        self._tasks: list[asyncio.Task[None]] = []
        #: Business dates clearing reported settled: final, so never asked again.
        self.settled_dates: set[date] = set()
        #: Dates found unsettled, and until when that answer is trusted (monotonic time).
        self.unsettled_until: dict[date, float] = {}

    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.session_factory

    def _instrument_changed(self, code: str) -> None:
        self.refdata.forget_instrument(code)

    def _after_commit(self, pushes: PendingPushes) -> None:
        pushes.flush(self.hub)
        if pushes.webhooks:
            self.webhooks.wake()

    async def _depth(self, instrument: str) -> dict[str, Any] | None:
        data = await self.downstream.matching.json(
            "GET", f"/internal/books/{instrument}/depth", params={"levels": 10}
        )
        return data if isinstance(data, dict) else None

    async def start(self) -> None:
        self.settings.warn_defaults()
        self.webhooks.start()
        self._tasks = [
            asyncio.create_task(self._load_reference_data(), name="gateway-refdata"),
            asyncio.create_task(self._purge_idempotency(), name="gateway-idempotency-purge"),
        ]
        if self.settings.ws_fanout == "postgres":
            self._tasks.append(asyncio.create_task(self._listen_pushes(), name="gateway-ws-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.webhooks.stop()
        await self.downstream.close()
        await self.order_writes.close()

    async def _load_reference_data(self) -> None:
        """Products from custody and the business date from clearing, retried until done."""
        delay = 0.5
        instruments_done = date_done = False
        while not (instruments_done and date_done):
            if not instruments_done:
                try:
                    async with self.sessions()() as session, session.begin():
                        count = await self.refdata.load_instruments(session)
                    log.info("reference data loaded", extra={"instruments": count})
                    instruments_done = True
                except Exception as exc:
                    log.info(
                        "custody not reachable for reference data yet", extra={"error": repr(exc)}
                    )
            if not date_done:
                try:
                    data = await self.downstream.clearing.json("GET", "/internal/business-date")
                    async with self.sessions()() as session, session.begin():
                        await repo.set_business_date(
                            session, str(data["business_date"]), only_forward=True
                        )
                    date_done = True
                except Exception as exc:
                    log.info(
                        "clearing not reachable for the business date yet",
                        extra={"error": repr(exc)},
                    )
            if not (instruments_done and date_done):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _listen_pushes(self) -> None:
        """Feed this instance's WebSocket subscribers from the view updater's NOTIFYs."""

        def received(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                self.hub.apply(orjson.loads(payload))
            except Exception:
                log.warning("unusable websocket push", exc_info=True)

        await listen_forever(asyncpg_dsn(self.settings.database_url), WS_CHANNEL, received)

    async def _purge_idempotency(self) -> None:
        while True:
            try:
                purged = await self.idempotency.purge_expired()
                if purged:
                    log.info("expired idempotency keys purged", extra={"count": purged})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("idempotency purge failed", exc_info=True)
            await asyncio.sleep(3600)


class GatewayRuntime(ServiceRuntime):
    """The shared runtime plus the gateway's own background work."""

    def __init__(self, gateway: Gateway, consumers: list[ConsumerSpec]) -> None:
        super().__init__("gateway", gateway.settings, consumers=consumers)
        self.gateway = gateway

    async def start(self) -> None:
        await super().start()
        await self.gateway.start()

    async def stop(self) -> None:
        await self.gateway.stop()
        await super().stop()


def get_gateway(request: Request) -> Gateway:
    gateway = request.app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway


async def gateway_dependency(request: Request) -> Gateway:
    """``get_gateway`` for ``Depends``: FastAPI runs a plain function dependency in a worker
    thread, on every request."""
    return get_gateway(request)
