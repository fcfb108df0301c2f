"""Listening to a PostgreSQL NOTIFY channel for as long as the process runs.

A dedicated asyncpg connection, reopened whenever it is lost; `on_connect` runs after each
(re)connection, because notifications sent while disconnected are gone.
"""

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

NotifyCallback = Callable[[object, int, str, str], None]


async def listen_forever(
    dsn: str,
    channel: str,
    on_notify: NotifyCallback,
    *,
    on_connect: Callable[[], None] | None = None,
) -> None:
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except asyncio.CancelledError:
            raise
        except Exception:
            await asyncio.sleep(1.0)
            continue
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(channel, on_notify)
            if on_connect is not None:
                on_connect()
            await lost.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("notification listener lost", exc_info=True, extra={"channel": channel})
        finally:
            if not conn.is_closed():
                await conn.close(timeout=2)
        await asyncio.sleep(0.5)
