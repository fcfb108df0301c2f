"""One running gateway per test session, with real PostgreSQL and RabbitMQ, and small
real HTTP stand-ins for custody, matching and clearing."""

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from shared.contracts import system_queues
from shared.db import make_engine
from shared.messaging.broker import Broker
from shared.messaging.topology import Topology
from tests.gateway.events import Producer
from tests.gateway.stubs import ClearingState, CustodyState, clearing_app, custody_app, matching_app
from tests.gateway.support import (
    PartnerApi,
    PartnerCreds,
    RunningServer,
    instrument_body,
    unique_code,
)
from tests.support import env
from tests.support.databases import own_database
from tests.support.wait import wait_until

ADMIN_TOKEN = "test-admin-" + secrets.token_hex(8)


@dataclass
class Stack:
    url: str
    settings: GatewaySettings
    custody: CustodyState
    clearing: ClearingState
    http: httpx.AsyncClient
    admin_headers: dict[str, str]

    async def new_partner(self, **extra: Any) -> PartnerApi:
        response = await self.http.post(
            "/v1/admin/partners",
            json={"name": f"partner {secrets.token_hex(3)}", **extra},
            headers=self.admin_headers,
        )
        assert response.status_code == 201, response.text
        data = response.json()
        return PartnerApi(
            self.http, PartnerCreds(data["partner_id"], data["api_key"], data["api_secret"])
        )

    async def staff_headers(self, role: str) -> dict[str, str]:
        response = await self.http.post(
            "/v1/admin/staff-tokens",
            json={"role": role, "name": f"{role} desk"},
            headers=self.admin_headers,
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    async def new_instrument(self, **overrides: Any) -> str:
        code = str(overrides.pop("code", unique_code()))
        response = await self.http.post(
            "/v1/admin/instruments",
            json=instrument_body(code, **overrides),
            headers=self.admin_headers,
        )
        assert response.status_code == 201, response.text
        return code

    async def new_member(self, partner: PartnerApi, **overrides: Any) -> str:
        body = {
            "external_ref": secrets.token_hex(6),
            "name": "Investor",
            "kind": "individual",
            "qualified": True,
            "risk_tolerance": "C4",
            **overrides,
        }
        response = await partner.post("/v1/members", body)
        assert response.status_code == 201, response.text
        return str(response.json()["member_id"])


@pytest.fixture(scope="session")
def gateway_namespace(broker_namespace: str) -> str:
    """The gateway tests' own broker namespace: other suites' leftovers (a business-date
    roll, book events) must not reach the gateway under test."""
    return f"{broker_namespace}.gw"


@pytest.fixture(scope="session")
def gateway_database_url() -> Iterator[str]:
    """The gateway tests' own database: other suites run real gateways that move the
    business date they keep."""
    with own_database("gw") as url:
        yield url


@pytest.fixture(scope="session")
async def engine(gateway_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(gateway_database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def stack(gateway_database_url: str, gateway_namespace: str) -> AsyncIterator[Stack]:
    custody_state = CustodyState()
    clearing_state = ClearingState()
    custody = RunningServer(custody_app(custody_state))
    matching = RunningServer(matching_app())
    clearing = RunningServer(clearing_app(clearing_state))
    for server in (custody, matching, clearing):
        await server.start()
    settings = GatewaySettings(
        database_url=gateway_database_url,
        amqp_url=env.AMQP_URL,
        broker_prefix=gateway_namespace,
        log_format="console",
        log_level="WARNING",
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key-" + secrets.token_hex(8),
        custody_url=custody.url,
        matching_url=matching.url,
        clearing_url=clearing.url,
        control_wait_seconds=0,
        webhook_backoff_seconds=0.1,
        webhook_poll_seconds=0.1,
        relay_poll_seconds=0.2,
        downstream_timeout_seconds=3,
    )
    gateway = RunningServer(create_app(settings))
    await gateway.start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_until(ready, timeout=30, message="gateway ready")
        yield Stack(
            gateway.url,
            settings,
            custody_state,
            clearing_state,
            http,
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    await gateway.stop()
    for server in (custody, matching, clearing):
        await server.stop()


@pytest.fixture(scope="session")
async def broker(stack: Stack, gateway_namespace: str) -> AsyncIterator[Broker]:
    """A publisher standing in for matching and custody on the gateway tests' namespace."""
    broker = Broker(
        env.AMQP_URL,
        Topology(gateway_namespace),
        connection_name="gateway-tests",
        prefetch=10,
        queues=system_queues(),
    )
    broker.start()
    await broker.wait_connected(timeout=20)
    yield broker
    await broker.close()


@pytest.fixture(scope="session")
def producer(broker: Broker) -> Producer:
    return Producer(broker)
