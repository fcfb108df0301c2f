"""What every service process runs besides its HTTP routes: the database engine, the broker
connection, the outbox relay and the inbox consumers; and how it tells it is ready."""

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.config import CommonSettings
from shared.contracts import system_queues
from shared.db import asyncpg_dsn, check_identifier, make_engine, make_session_factory
from shared.driver import DriverPool
from shared.messaging.broker import Broker
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import (
    BatchBegin,
    BatchEnd,
    BatchHandler,
    ConsumerGroup,
    Handler,
    InboxConsumer,
)
from shared.messaging.outbox import Outbox, OutboxRelay
from shared.messaging.retention import InboxPruner, OutboxPruner
from shared.messaging.topology import QueueSpec, Topology
from shared.metrics import READY

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    name: str
    queue: QueueSpec
    handler: Handler
    max_batch: int = 200
    batch_begin: BatchBegin | None = None
    batch_end: BatchEnd | None = None
    #: Optional: applies a delivery batch's new envelopes at once (see InboxConsumer).
    batch_handler: BatchHandler | None = None
    #: Wait this long after a batch's first delivery before applying it (DeliveryBatcher).
    linger_seconds: float = 0.0
    #: Apply batches on plain asyncpg transactions (``shared.driver``), except a batch
    #: holding a message for which ``needs_session`` is true (its handling uses the ORM).
    driver: bool = False
    needs_session: Callable[[Envelope], bool] | None = None


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """Consumers (by their specs' names, in the order they apply) with one writer: see
    ``ConsumerGroup``."""

    name: str
    members: tuple[str, ...]
    max_batch: int = 200


class Component(Protocol):
    """Something a service runs beside its inbox consumers (an engine, a delivery loop)."""

    async def start(self, runtime: "ServiceRuntime") -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


#: Allocations (net of frees) between collections of the youngest generation.
YOUNG_COLLECTION_THRESHOLD = 20_000


def settle_heap() -> None:
    """Move everything alive after start-up (modules, the web framework's and the ORM's
    structures, caches) out of the cycle collector's sight. Full collections otherwise
    traverse all of it: measured at 100-180 ms each in every service under load, a pause
    that every message and request in flight waits out (docs/benchmarks.md).

    The youngest generation is also collected less often: at the default of every 700
    allocations, collections were 6% of the gateway's CPU under load, and nearly all they
    find is garbage that reference counting frees anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: CommonSettings,
        *,
        consumers: Sequence[ConsumerSpec] = (),
        groups: Sequence[GroupSpec] = (),
        queues: Sequence[QueueSpec] | None = None,
        components: Sequence[Component] = (),
        prune_outbox: bool = True,
    ) -> None:
        self.name = name
        self.schema = check_identifier(name)
        self.settings = settings
        self.topology = Topology(settings.broker_prefix, settings.delivery_limit)
        self._consumer_specs = tuple(consumers)
        self._group_specs = tuple(groups)
        names = [spec.name for spec in self._consumer_specs]
        grouped = [name for group in self._group_specs for name in group.members]
        if len(set(grouped)) != len(grouped) or not set(grouped) <= set(names):
            raise ValueError(f"consumer groups {grouped} must name distinct consumers of {names}")
        self._components = tuple(components)
        self._prune_outbox = prune_outbox
        self._pruners: list[OutboxPruner | InboxPruner] = []
        # Every service declares every queue, so a message is routable as soon as any is up.
        declared = {
            q.name: q
            for q in (system_queues(settings.matching_shards) if queues is None else queues)
        }
        for spec in self._consumer_specs:
            declared.setdefault(spec.queue.name, spec.queue)
        self._queues = tuple(declared.values())
        self.outbox = Outbox(self.schema, producer=name)
        self.engine: AsyncEngine
        self.session_factory: async_sessionmaker[AsyncSession]
        self.broker: Broker
        self._relay: OutboxRelay | None = None
        self._consumers: list[InboxConsumer | ConsumerGroup] = []
        #: Plain asyncpg transactions (``shared.driver``) for the hot consumers and
        #: components; its connections open on first use.
        self.driver: DriverPool
        self._consumers_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        self.engine = make_engine(
            settings.database_url, pool_size=settings.db_pool_size, application_name=self.name
        )
        self.session_factory = make_session_factory(self.engine)
        self.broker = Broker(
            settings.amqp_url,
            self.topology,
            connection_name=self.name,
            prefetch=settings.prefetch,
            queues=self._queues,
        )
        self.broker.start()
        self._relay = OutboxRelay(
            self.schema,
            self.broker,
            database_url=settings.database_url,
            batch_size=settings.relay_batch_size,
            poll_seconds=settings.relay_poll_seconds,
        )
        self._relay.start()
        # Matching keeps its outbox for recovery; a service without inbox consumers has no
        # inbox to prune.
        if self._prune_outbox:
            self._pruners.append(
                OutboxPruner(
                    self.schema,
                    database_url=settings.database_url,
                    retention_seconds=settings.outbox_retention_hours * 3600,
                    interval_seconds=settings.outbox_prune_interval_seconds,
                )
            )
        if self._consumer_specs:
            self._pruners.append(
                InboxPruner(
                    self.schema,
                    database_url=settings.database_url,
                    retention_seconds=settings.inbox_retention_hours * 3600,
                    interval_seconds=settings.inbox_prune_interval_seconds,
                )
            )
        for pruner in self._pruners:
            pruner.start()
        self.driver = DriverPool(
            asyncpg_dsn(settings.database_url),
            max_connections=settings.db_pool_size,
            application_name=f"{self.name}-driver",
        )
        consumers = {
            spec.name: InboxConsumer(
                name=f"{self.name}.{spec.name}",
                queue=spec.queue,
                schema=self.schema,
                session_factory=self.session_factory,
                handler=spec.handler,
                max_batch=spec.max_batch,
                batch_begin=spec.batch_begin,
                batch_end=spec.batch_end,
                batch_handler=spec.batch_handler,
                linger_seconds=spec.linger_seconds,
                driver=self.driver if spec.driver else None,
                needs_session=spec.needs_session,
            )
            for spec in self._consumer_specs
        }
        self._consumers = [
            ConsumerGroup(
                name=f"{self.name}.{group.name}",
                consumers=[consumers.pop(member) for member in group.members],
                max_batch=group.max_batch,
            )
            for group in self._group_specs
        ]
        self._consumers.extend(consumers.values())
        for consumer in self._consumers:
            await consumer.start(self.broker)
        for component in self._components:
            await component.start(self)
        settle_heap()
        log.info("service started", extra={"port": settings.port_of(self.name)})

    async def stop(self) -> None:
        for component in reversed(self._components):
            await component.stop()
        for consumer in self._consumers:
            await consumer.stop()
        for pruner in self._pruners:
            await pruner.stop()
        if self._relay is not None:
            await self._relay.stop()
        await self.driver.close()
        await self.broker.close()
        await self.engine.dispose()
        log.info("service stopped")

    async def readiness(self) -> Readiness:
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["broker"] = "ok" if self.broker.is_ready else "unreachable"
        ready = all(v == "ok" for v in checks.values())
        READY.labels(self.name).set(1 if ready else 0)
        return Readiness(ready, checks)
