"""Looking at the broker from outside: a queue's depth; removing a broker namespace (every
queue and exchange under a prefix) after a run."""

import asyncio

import aio_pika

from tests.support import env


async def delete_broker_namespace(prefix: str) -> None:
    """Delete every queue and exchange named `{prefix}.…` (sub-namespaces included)."""

    async def names(kind: str) -> list[str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                "rabbitmqctl",
                kind,
                "name",
                "--quiet",
                "--no-table-headers",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except FileNotFoundError:  # a remote broker: nothing to list, leave it
            return []
        out, _ = await proc.communicate()
        return [n for n in out.decode().split() if n.startswith(f"{prefix}.")]

    queues, exchanges = await names("list_queues"), await names("list_exchanges")
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)


async def queue_depth(name: str) -> int:
    """Messages ready in a queue (not those delivered and not yet acknowledged)."""
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0
