"""Gateway benchmark: orders accepted per second over HTTP (single and batch), latency
at fixed offered rates, and how fast the view updater brings order views to their final
state from book events.

Real PostgreSQL and RabbitMQ; the gateway runs as its own uvicorn process; custody,
matching and clearing are the test stubs (tests/gateway/stubs.py), which the gateway
only asks once per product and member. The load generator is Python (httpx) on the
same 2-core machine, so the numbers are a floor for the gateway, not a ceiling.

    .venv/bin/python -m bench.gateway.run [--seconds 10] [--rates 500,1000]
"""

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from shared.contracts import system_queues
from shared.db import asyncpg_dsn
from shared.messaging.broker import Broker
from shared.messaging.topology import Topology
from shared.migrations import ensure_database, upgrade_all
from tests.gateway.events import Producer, accepted, filled, rested, trade
from tests.gateway.stubs import ClearingState, CustodyState, clearing_app, custody_app, matching_app
from tests.gateway.support import (
    PartnerApi,
    PartnerCreds,
    RunningServer,
    free_port,
    instrument_body,
    unique_code,
)
from tests.support.broker_admin import delete_broker_namespace

BASE_DB = os.environ.get(
    "EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"
)
AMQP = os.environ.get("EXCHANGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN = "bench-admin-" + secrets.token_hex(6)


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    ordered = sorted(samples)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return f"p50 {at(0.50):.1f} ms, p95 {at(0.95):.1f} ms, p99 {at(0.99):.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def order_body(member: str, code: str, side: str = "buy") -> dict[str, Any]:
    return {
        "client_order_id": "b-" + secrets.token_hex(10),
        "member_id": member,
        "instrument": code,
        "side": side,
        "price": "100.00",
        "quantity": 1,
        "time_in_force": "GTC",
    }


async def closed_loop(
    seconds: float, concurrency: int, send: Callable[[], Awaitable[int]]
) -> tuple[int, list[float]]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            count = await send()  # (not `done += await ...`: that reads `done` before awaiting)
            done += count
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, latencies


async def open_loop(
    seconds: float, rate: int, send: Callable[[], Awaitable[int]]
) -> tuple[int, list[float]]:
    """Requests started at a fixed rate, whatever the answers do (no coordinated omission)."""
    latencies: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    total = int(seconds * rate)

    async def one(scheduled: float) -> None:
        await send()
        latencies.append(time.perf_counter() - scheduled)

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return total, latencies


async def main(args: argparse.Namespace) -> None:
    tag = secrets.token_hex(3)
    database = f"{BASE_DB}/exchange_bench_{tag}"
    prefix = f"bench{tag}"
    await ensure_database(database)
    await asyncio.to_thread(upgrade_all, database)
    custody_state = CustodyState()
    stubs = [
        RunningServer(custody_app(custody_state)),
        RunningServer(matching_app()),
        RunningServer(clearing_app(ClearingState())),
    ]
    for stub in stubs:
        await stub.start()
    port = free_port()
    env = dict(
        os.environ,
        EXCHANGE_DATABASE_URL=database,
        EXCHANGE_AMQP_URL=AMQP,
        EXCHANGE_BROKER_PREFIX=prefix,
        EXCHANGE_ADMIN_TOKEN=ADMIN,
        EXCHANGE_LOG_LEVEL="WARNING",
        EXCHANGE_CUSTODY_URL=stubs[0].url,
        EXCHANGE_MATCHING_URL=stubs[1].url,
        EXCHANGE_CLEARING_URL=stubs[2].url,
        EXCHANGE_RATE_LIMIT_PER_SECOND="1000000",
        EXCHANGE_RATE_LIMIT_BURST="1000000",
        EXCHANGE_DB_POOL_SIZE="20",
    )
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.gateway.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    broker = Broker(
        AMQP, Topology(prefix), connection_name="bench", prefetch=10, queues=system_queues()
    )
    try:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        # No limit on waiting for a pooled connection: at a fixed offered rate above what the
        # gateway answers, requests queue here, and that wait is part of their latency.
        timeout = httpx.Timeout(30, pool=None)
        async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            made = (
                await http.post("/v1/admin/partners", json={"name": "bench"}, headers=admin)
            ).json()
            partner = PartnerApi(
                http, PartnerCreds(made["partner_id"], made["api_key"], made["api_secret"])
            )
            code = unique_code("B")
            body = instrument_body(
                code, lot_size=1, min_order_qty=1, min_order_value="0.01", tick_size="0.01"
            )
            assert (
                await http.post("/v1/admin/instruments", json=body, headers=admin)
            ).status_code == 201
            members = []
            for i in range(2):
                response = await partner.post(
                    "/v1/members",
                    {
                        "external_ref": f"bench-{i}",
                        "name": "b",
                        "kind": "individual",
                        "qualified": True,
                        "risk_tolerance": "C5",
                    },
                )
                members.append(response.json()["member_id"])
            placed: list[dict[str, Any]] = []
            refused: dict[int, int] = {}

            async def single() -> int:
                response = await partner.post("/v1/orders", order_body(members[0], code))
                if response.status_code != 202:
                    # Above the gateway's rate, requests wait in the client's pool long
                    # enough for their signatures to go stale (401): counted, not fatal.
                    refused[response.status_code] = refused.get(response.status_code, 0) + 1
                    return 0
                placed.append(response.json())
                return 1

            async def batch() -> int:
                bodies = [order_body(members[0], code) for _ in range(100)]
                response = await partner.post("/v1/orders/batch", {"orders": bodies})
                assert response.status_code == 202, response.text
                return 100

            await closed_loop(2, 8, single)  # warm up
            print(
                f"## gateway order entry ({args.seconds:.0f} s per run, loopback, Python load generator)\n"
            )
            n, lat = await closed_loop(args.seconds, args.concurrency, single)
            print(
                f"- single orders, {args.concurrency} concurrent: {n / args.seconds:.0f} orders/s; {percentiles(lat)}"
            )
            n, lat = await closed_loop(args.seconds, 4, batch)
            print(
                f"- batch of 100, 4 concurrent: {n / args.seconds:.0f} orders/s; per request {percentiles(lat)}"
            )
            for rate in args.rates:
                refused.clear()
                n, lat = await open_loop(args.seconds, rate, single)
                print(
                    f"- single orders offered at {rate}/s: {percentiles(lat)}"
                    + (f"; refused {refused}" if refused else "")
                )

            # The view updater: pairs of orders that fill each other, final from one message each.
            broker.start()
            await broker.wait_connected(timeout=20)
            producer = Producer(broker)
            pairs = []
            for _ in range(args.pairs // 100):
                bodies = []
                for _ in range(50):
                    bodies.append(order_body(members[1], code, "sell"))
                    bodies.append(order_body(members[0], code, "buy"))
                results = (await partner.post("/v1/orders/batch", {"orders": bodies})).json()[
                    "results"
                ]
                pairs += list(zip(results[::2], results[1::2], strict=True))
            conn = await asyncpg.connect(asyncpg_dsn(database))
            started = time.perf_counter()
            for sell, buy in pairs:
                await producer.book(
                    code,
                    accepted(sell),
                    rested(sell),
                    accepted(buy),
                    trade(sell, buy, 1, "2026-11-20"),
                    filled(sell, 1),
                    filled(buy, 1),
                )
            published = time.perf_counter() - started
            ids = [o["order_id"] for pair in pairs for o in pair]
            while True:
                final = await conn.fetchval(
                    "SELECT count(*) FROM gateway.orders WHERE order_id = ANY($1) AND status = 'filled'",
                    ids,
                )
                if final == len(ids):
                    break
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            await conn.close()
            print(
                f"- view updater: {len(ids)} orders final (filled, with trades) in {elapsed:.2f} s "
                f"= {len(ids) / elapsed:.0f} orders/s ({len(pairs)} book messages, published in {published:.2f} s)"
            )
    finally:
        await broker.close()
        gateway.terminate()
        try:
            await asyncio.to_thread(gateway.wait, 20)
        except subprocess.TimeoutExpired:
            print("(the gateway did not exit within 20 s of SIGTERM; killed)")
            gateway.kill()
            await asyncio.to_thread(gateway.wait)
        for stub in stubs:
            await stub.stop()
        admin_conn = await asyncpg.connect(asyncpg_dsn(database).rsplit("/", 1)[0] + "/postgres")
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "exchange_bench_{tag}" WITH (FORCE)')
        await admin_conn.close()
        await delete_broker_namespace(prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",")], default=[500, 1000]
    )
    parser.add_argument("--pairs", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
