"""One robust RabbitMQ connection per process: a confirmed publish channel and a consume channel.

The first connection is retried in the background, so a service starts (and reports not
ready) while the broker is down; after that aio-pika's robust connection restores the
channels, the topology and the consumers by itself.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from shared.messaging.envelope import BUNDLE_CONTENT_TYPE, DEFLATE, Envelope, deflate
from shared.messaging.topology import QueueSpec, Topology

log = logging.getLogger(__name__)

MessageCallback = Callable[[AbstractIncomingMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    routing_key: str
    body: bytes
    message_id: str
    type: str
    correlation_id: str | None
    producer: str
    stream: str
    sequence: int
    content_type: str = "application/json"
    content_encoding: str | None = None

    @classmethod
    def from_envelope(cls, routing_key: str, envelope: Envelope) -> "OutgoingMessage":
        return cls(
            routing_key=routing_key,
            body=envelope.encode(),
            message_id=envelope.message_id,
            type=envelope.type,
            correlation_id=envelope.correlation_id,
            producer=envelope.producer,
            stream=envelope.stream,
            sequence=envelope.sequence,
        )


def bundle(messages: Sequence[OutgoingMessage], max_size: int) -> list[OutgoingMessage]:
    """Pack runs of consecutive messages with the same routing key into bundles, each sent
    compressed (``DEFLATE``).

    Only consecutive messages are packed, so the order in which any queue receives them
    is the order they were given in, whatever keys the queue is bound to.
    """
    out: list[OutgoingMessage] = []
    run: list[OutgoingMessage] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            first = run[0]
            out.append(
                OutgoingMessage(
                    routing_key=first.routing_key,
                    body=deflate(b"[" + b",".join(m.body for m in run) + b"]"),
                    message_id=f"bundle:{first.message_id}",
                    type="bundle",
                    correlation_id=first.correlation_id,
                    producer=first.producer,
                    stream=first.stream,
                    sequence=first.sequence,
                    content_type=BUNDLE_CONTENT_TYPE,
                    content_encoding=DEFLATE,
                )
            )
        run.clear()

    for message in messages:
        if run and (message.routing_key != run[0].routing_key or len(run) >= max_size):
            flush()
        run.append(message)
    flush()
    return out


class BrokerNotReady(RuntimeError):
    pass


class Broker:
    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        connection_name: str,
        prefetch: int,
        queues: Sequence[QueueSpec] = (),
        reconnect_interval: float = 1.0,
    ) -> None:
        self._url = url
        self.topology = topology
        self._connection_name = connection_name
        self._prefetch = prefetch
        self._queues = tuple(queues)
        self._reconnect_interval = reconnect_interval
        # Strong references: aio-pika keeps weak ones, and a collected channel stops consuming.
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumers: list[tuple[QueueSpec, MessageCallback]] = []

    def start(self) -> None:
        """Connect in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_forever(), name="broker-connect")

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _connect_forever(self) -> None:
        while True:
            try:
                await self._connect_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker unreachable, retrying", extra={"error": repr(exc)})
                await self._discard()
                await asyncio.sleep(self._reconnect_interval)

    async def _connect_once(self) -> None:
        connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self._connection_name},
            reconnect_interval=self._reconnect_interval,
            timeout=5,
        )
        self._connection = connection
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publish_channel = publish
        self._exchange = await self.topology.declare_exchanges(publish)
        await self.topology.declare_queues(publish, self._queues)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=self._prefetch)
        self._consume_channel = consume
        for spec, callback in self._consumers:
            await self._start_consumer(spec, callback)
        self._connected.set()
        log.info("broker connected", extra={"queues": [q.name for q in self._queues]})

    async def _discard(self) -> None:
        connection, self._connection = self._connection, None
        self._publish_channel = self._consume_channel = None
        self._exchange = None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                log.debug("closing a failed connection", exc_info=True)

    async def _start_consumer(self, spec: QueueSpec, callback: MessageCallback) -> None:
        assert self._consume_channel is not None
        queue = await self._consume_channel.get_queue(self.topology.queue_name(spec), ensure=False)
        await queue.consume(callback)

    async def consume(self, spec: QueueSpec, callback: MessageCallback) -> None:
        """Register a consumer; it starts now if connected, else on connection."""
        self._consumers.append((spec, callback))
        if self._connected.is_set():
            await self._start_consumer(spec, callback)

    @property
    def is_ready(self) -> bool:
        connection = self._connection
        channel = self._publish_channel
        return (
            self._connected.is_set()
            and connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
        )

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish persistent messages and wait until the broker confirms every one.

        Raises if any is nacked or unroutable. Messages on one channel keep their order.
        """
        if not self.is_ready or self._exchange is None:
            raise BrokerNotReady("broker is not connected")
        exchange = self._exchange
        confirms = [
            exchange.publish(
                aio_pika.Message(
                    body=m.body,
                    content_type=m.content_type,
                    content_encoding=m.content_encoding,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=m.message_id,
                    type=m.type,
                    correlation_id=m.correlation_id,
                    headers={"producer": m.producer, "stream": m.stream, "sequence": m.sequence},
                ),
                routing_key=m.routing_key,
                mandatory=True,
                timeout=10,
            )
            for m in messages
        ]
        results = await asyncio.gather(*confirms, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._connected.clear()
        await self._discard()
