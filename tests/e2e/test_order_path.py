"""An order's path across real services: custody reserves, matching matches, custody turns
the fill into settlement obligations and releases what is no longer needed."""

import asyncio
import itertools
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts import ORDER_CANCEL, ORDER_SUBMIT
from shared.db import asyncpg_dsn
from shared.ids import new_id, uuid7
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import Envelope
from shared.messaging.topology import Topology
from tests.support import env
from tests.support.products import instrument_body
from tests.support.services import ServiceProcess, metric_total
from tests.support.wait import wait_until

PARTNER = "p_e2e"


@pytest.fixture
async def system(
    e2e_database_url: str, broker_namespace: str
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess, Broker]]:
    prefix = f"{broker_namespace}.e2e{secrets.token_hex(2)}"
    own = {"EXCHANGE_BROKER_PREFIX": prefix, "EXCHANGE_DATABASE_URL": e2e_database_url}
    matching = ServiceProcess("matching", **own)
    custody = ServiceProcess(
        "custody",
        EXCHANGE_MATCHING_PORT=str(matching.port),
        # Custody prunes its inbox as soon as it can: records older than 0.36 s.
        EXCHANGE_INBOX_RETENTION_HOURS="0.0001",
        EXCHANGE_INBOX_PRUNE_INTERVAL_SECONDS="0.5",
        **own,
    )
    await asyncio.gather(matching.start(), custody.start())
    broker = Broker(env.AMQP_URL, Topology(prefix), connection_name="e2e-gateway", prefetch=10)
    broker.start()
    await broker.wait_connected(20)
    try:
        yield custody, matching, broker
    finally:
        await broker.close()
        await asyncio.gather(custody.stop(), matching.stop())


#: The stand-in gateway's stream numbers its commands as the gateway's outbox does: each
#: once (custody takes a sequence at or below its position for a redelivery).
_gateway_sequence = itertools.count(1)


async def gateway_sends(broker: Broker, routing_key: str, payload: dict[str, Any]) -> Envelope:
    envelope = Envelope(
        str(uuid7()), routing_key, "gateway", "gateway", next(_gateway_sequence), payload
    )
    await broker.publish([OutgoingMessage.from_envelope(routing_key, envelope)])
    return envelope


async def new_member(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/internal/members",
        json={
            "partner_id": PARTNER,
            "external_ref": new_id("x"),
            "name": "Investor",
            "kind": "individual",
            "qualified": True,
            "risk_tolerance": "C4",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["member_id"])


async def test_orders_reserve_match_settle_pending_and_cancel_releases(
    system: tuple[ServiceProcess, ServiceProcess, Broker],
    e2e_database_url: str,
) -> None:
    custody, matching, broker = system
    code = f"E{secrets.token_hex(4).upper()}"
    async with httpx.AsyncClient(base_url=custody.url, timeout=10) as client:
        assert (
            await client.post(
                "/internal/instruments", json=instrument_body(code, issue_size=10_000)
            )
        ).status_code == 201
        seller, buyer = await new_member(client), await new_member(client)
        allocated = await client.post(
            f"/internal/instruments/{code}/allocations",
            json={"allocations": [{"member_id": seller, "quantity": 100}]},
        )
        assert allocated.status_code == 201, allocated.text
        deposited = await client.post(
            "/internal/deposits",
            json={"member_id": buyer, "amount": "10000.00", "bank_reference": new_id("bk")},
        )
        assert deposited.status_code == 201, deposited.text

        order = {"partner_id": PARTNER, "instrument": code, "time_in_force": "GTC"}
        await gateway_sends(
            broker,
            ORDER_SUBMIT,
            {
                **order,
                "order_id": "o-sell",
                "client_order_id": "c1",
                "member_id": seller,
                "side": "SELL",
                "price_fen": 100_50,
                "quantity": 10,
            },
        )
        buy = await gateway_sends(
            broker,
            ORDER_SUBMIT,
            {
                **order,
                "order_id": "o-buy",
                "client_order_id": "c2",
                "member_id": buyer,
                "side": "BUY",
                "price_fen": 101_00,
                "quantity": 4,
            },
        )

        async def balances(member: str) -> dict[str, Any]:
            response = await client.get(
                f"/internal/members/{member}/balances", params={"partner_id": PARTNER}
            )
            return dict(response.json())

        def units(body: dict[str, Any]) -> dict[str, Any]:
            return next((h for h in body["holdings"] if h["instrument"] == code), {})

        async def buyer_filled() -> bool:
            return (await balances(buyer))["cash"]["pending_out"] != "0.00"

        await wait_until(buyer_filled, timeout=30, message="the buy filled")
        # 4 units at the maker's 100.50 = 402.00; below 50,000.00 each side pays 2.00.
        cash = (await balances(buyer))["cash"]
        assert cash == {
            "settled": "10000.00",
            "held": "0.00",
            "pending_in": "0.00",
            "pending_out": "404.00",
            "available": "9596.00",
        }
        assert units(await balances(buyer))["pending_in"] == 4
        seller_body = await balances(seller)
        assert seller_body["cash"]["pending_in"] == "400.00"
        assert {
            k: units(seller_body)[k] for k in ("settled", "held", "pending_out", "available")
        } == {
            "settled": 100,
            "held": 6,
            "pending_out": 4,
            "available": 90,
        }
        async with httpx.AsyncClient(base_url=matching.url) as market:
            depth = (await market.get(f"/internal/books/{code}/depth")).json()
            assert depth["asks"] == [["100.50", 6]]
            ticker = (await market.get(f"/internal/books/{code}/ticker")).json()
            assert (ticker["last"], ticker["volume"], ticker["reference_price"]) == (
                "100.50",
                4,
                "100.00",
            )

        await gateway_sends(
            broker, ORDER_CANCEL, {"order_id": "o-sell", "member_id": seller, "instrument": code}
        )

        async def released() -> bool:
            return units(await balances(seller))["held"] == 0

        await wait_until(released, timeout=30, message="the cancel released the units")
        assert units(await balances(seller))["available"] == 96

        # Two sells sent out of order (the later sequence first): custody applies both and
        # records their ids (the first arrives past a gap, the second while it is open),
        # and its own pruner deletes those records once the position covers them and the
        # retention has passed. The buy sent again then holds nothing: its sequence is
        # below the position. (Custody's reservations also know the order id, so this
        # last part holds with an inbox that forgets: tests/shared/test_inbox_retention.py
        # is where only the position can tell a redelivery.)
        earlier, later = next(_gateway_sequence), next(_gateway_sequence)
        for order_id, client_order_id, quantity, sequence in (
            ("o-sell-3", "c4", 1, later),
            ("o-sell-2", "c3", 5, earlier),
        ):
            payload = {
                **order,
                "order_id": order_id,
                "client_order_id": client_order_id,
                "member_id": seller,
                "side": "SELL",
                "price_fen": 102_00,
                "quantity": quantity,
            }
            sent = Envelope(str(uuid7()), ORDER_SUBMIT, "gateway", "gateway", sequence, payload)
            await broker.publish([OutgoingMessage.from_envelope(ORDER_SUBMIT, sent)])

        async def sells_held() -> bool:
            return units(await balances(seller))["held"] == 6

        await wait_until(sells_held, timeout=30, message="both sells held")

        async def inbox_pruned() -> bool:
            if await metric_total(custody, "exchange_inbox_pruned_total") < 2:
                return False
            conn = await asyncpg.connect(asyncpg_dsn(e2e_database_url))
            try:
                return await conn.fetchval("SELECT count(*) FROM custody.inbox") == 0
            finally:
                await conn.close()

        await wait_until(inbox_pruned, timeout=30, message="custody's inbox pruned")
        await broker.publish([OutgoingMessage.from_envelope(ORDER_SUBMIT, buy)])
        await gateway_sends(
            broker,
            ORDER_SUBMIT,
            {
                **order,
                "order_id": "o-sell-4",
                "client_order_id": "c5",
                "member_id": seller,
                "side": "SELL",
                "price_fen": 102_00,
                "quantity": 2,
            },
        )

        async def sell_held() -> bool:
            return units(await balances(seller))["held"] == 8

        await wait_until(sell_held, timeout=30, message="the last sell held")
        assert (await balances(buyer))["cash"] == cash
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exchange_cli.main", "ledger", "verify"],
        env=env.service_env(EXCHANGE_DATABASE_URL=e2e_database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
