"""A service reports not ready while its database or broker is unreachable, and recovers alone."""

import asyncio
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import make_url

from tests.support import env
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def proxies() -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    db = make_url(env.DATABASE_URL)
    amqp = urlsplit(env.AMQP_URL)
    db_proxy = TcpProxy(db.host or "127.0.0.1", db.port or 5432)
    amqp_proxy = TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672)
    await db_proxy.start()
    await amqp_proxy.start()
    yield db_proxy, amqp_proxy
    await db_proxy.cut()
    await amqp_proxy.cut()


async def readiness(client: httpx.AsyncClient, url: str) -> tuple[int, dict[str, str]]:
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json().get("checks", {})


def start_custody(port: int, database_url: str, amqp_url: str) -> subprocess.Popen[bytes]:
    log = Path(tempfile.gettempdir()) / f"readiness-{env.RUN_TAG}.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.custody.app:create_app",
                "--factory",
                "--port",
                str(port),
            ],
            env=env.service_env(
                EXCHANGE_DATABASE_URL=database_url,
                EXCHANGE_AMQP_URL=amqp_url,
                EXCHANGE_CUSTODY_PORT=str(port),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_not_ready_while_database_or_broker_is_cut_then_recovers(
    database_url: str, broker_namespace: str, proxies: tuple[TcpProxy, TcpProxy]
) -> None:
    db_proxy, amqp_proxy = proxies
    db = make_url(database_url)
    amqp = urlsplit(env.AMQP_URL)
    port = free_port()
    proxied_db = db.set(host="127.0.0.1", port=db_proxy.port).render_as_string(hide_password=False)
    proxied_amqp = f"amqp://{amqp.username}:{amqp.password}@127.0.0.1:{amqp_proxy.port}/"
    service = start_custody(port, proxied_db, proxied_amqp)
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def status_is(code: int, **checks: str) -> bool:
                status, seen = await readiness(client, url)
                return status == code and all(
                    seen.get(k, "").startswith(v) for k, v in checks.items()
                )

            await wait_until(lambda: status_is(200), timeout=30, message="service ready")

            await db_proxy.cut()
            await wait_until(
                lambda: status_is(503, database="unreachable", broker="ok"),
                message="not ready without the database",
            )
            await db_proxy.restore()
            await wait_until(
                lambda: status_is(200), timeout=30, message="ready after database returns"
            )

            await amqp_proxy.cut()
            await wait_until(
                lambda: status_is(503, broker="unreachable", database="ok"),
                message="not ready without the broker",
            )
            await amqp_proxy.restore()
            await wait_until(
                lambda: status_is(200), timeout=30, message="ready after broker returns"
            )

            health = await client.get(
                f"http://127.0.0.1:{port}/healthz", headers={"X-Correlation-Id": "req-abc"}
            )
            assert health.status_code == 200
            assert health.headers["X-Correlation-Id"] == "req-abc"
            metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert 'exchange_ready{service="custody"} 1.0' in metrics.text
    finally:
        service.terminate()
        await asyncio.to_thread(service.wait, 15)
