"""A relay or a consumer in a process of its own, so that a test can SIGKILL it.

    python tests/support/harness.py relay      # publish the msgtest outbox until it is empty
    python tests/support/harness.py consume    # apply msgtest messages until killed
    python tests/support/harness.py consume driver   # the same on driver transactions

Configuration comes from the EXCHANGE_* environment (see tests/support/env.py);
EXCHANGE_CRASH_AT names the crash point at which the process kills itself.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.config import CommonSettings
from shared.db import make_engine, make_session_factory
from shared.messaging.broker import Broker
from shared.messaging.inbox import InboxConsumer
from shared.messaging.outbox import OutboxRelay
from shared.messaging.topology import Topology
from tests.support.msgtest import QUEUE, SCHEMA, driver_pool, record_effect


async def main(mode: str, kind: str) -> None:
    settings = CommonSettings()
    engine = make_engine(settings.database_url, pool_size=2)
    topology = Topology(settings.broker_prefix, settings.delivery_limit)
    broker = Broker(
        settings.amqp_url, topology, connection_name=f"harness-{mode}", prefetch=50, queues=[QUEUE]
    )
    broker.start()
    await broker.wait_connected(timeout=20)
    if mode == "relay":
        relay = OutboxRelay(SCHEMA, broker, database_url=settings.database_url)
        while await relay.publish_batch():
            pass
        await relay.close()
        print("relay drained", flush=True)
    elif mode == "consume":
        consumer = InboxConsumer(
            name="harness",
            queue=QUEUE,
            schema=SCHEMA,
            session_factory=make_session_factory(engine),
            handler=record_effect,
            driver=driver_pool(settings.database_url, kind),
        )
        await consumer.start(broker)
        print("consuming", flush=True)
        await asyncio.Event().wait()
    await broker.close()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "session"))
