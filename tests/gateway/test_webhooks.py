"""Webhooks: persisted, signed with the partner's secret, retried with backoff until 2xx."""

import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.auth import signature
from tests.gateway.conftest import Stack
from tests.gateway.events import Producer, accepted, rested
from tests.gateway.support import RunningServer
from tests.gateway.test_orders import order
from tests.gateway.test_views import PERMISSIVE, place
from tests.support.wait import wait_until


class Receiver:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        self.app = FastAPI()

        @self.app.post("/hooks/exchange")
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body(), time.monotonic()))
            if len(self.received) <= self.failures:
                return Response(status_code=503)
            return Response(status_code=204)


async def test_events_are_signed_and_retried_until_acknowledged(
    stack: Stack, producer: Producer
) -> None:
    receiver = Receiver(failures=2)
    server = RunningServer(receiver.app)
    await server.start()
    try:
        partner = await stack.new_partner()
        url = f"{server.url}/hooks/exchange?tag=t1"
        registered = await partner.post("/v1/webhooks", {"url": url, "events": ["order.updated"]})
        assert registered.status_code == 201, registered.text
        assert (await partner.get("/v1/webhooks")).json()["items"][0]["url"] == url
        bad = await partner.post("/v1/webhooks", {"url": "ftp://x", "events": ["order.updated"]})
        assert bad.status_code == 422
        code = await stack.new_instrument(**PERMISSIVE)
        member = await stack.new_member(partner)
        placed = await place(partner, order(member, code))
        await producer.book(code, accepted(placed), rested(placed))

        async def delivered() -> bool:
            return len(receiver.received) >= 3

        await wait_until(delivered, timeout=20, message="third delivery attempt")
        bodies = {body for _, body, _ in receiver.received}
        assert len(bodies) == 1, "every retry carries the same event"
        headers, body, _ = receiver.received[-1]
        event: dict[str, Any] = orjson.loads(body)
        assert event["type"] == "order.updated"
        assert event["data"]["order_id"] == placed["order_id"]
        assert event["data"]["status"] == "open"
        assert headers["x-event-id"] == event["event_id"]
        assert headers["x-api-key"] == partner.creds.api_key
        expected = signature(
            partner.creds.api_secret,
            headers["x-timestamp"],
            "POST",
            "/hooks/exchange?tag=t1",
            body,
        )
        assert headers["x-signature"] == expected
        gaps = [b[2] - a[2] for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
        assert gaps[1] > gaps[0] * 1.5, f"backoff grows: {gaps}"
        # Acknowledged: nothing more arrives for it.
        count = len(receiver.received)
        other = await place(partner, order(member, code))
        await producer.book(code, accepted(other))

        async def next_event() -> bool:
            return len(receiver.received) > count

        await wait_until(next_event, message="the next event")
        assert b'"open"' in receiver.received[-1][1]
        assert other["order_id"].encode() in receiver.received[-1][1]
    finally:
        await server.stop()


async def test_callbacks_to_the_exchanges_own_services_are_refused(stack: Stack) -> None:
    partner = await stack.new_partner()
    for url in (
        f"{stack.settings.custody_url}/internal/deposits",
        str(stack.settings.matching_url).replace("127.0.0.1", "localhost") + "/internal/x",
    ):
        response = await partner.post("/v1/webhooks", {"url": url, "events": ["order.updated"]})
        assert (response.status_code, response.json()["code"]) == (422, "WEBHOOK_URL_FORBIDDEN")


async def test_a_queued_callback_is_delivered_from_the_table_alone(
    stack: Stack, engine: AsyncEngine
) -> None:
    """What a process left queued when it died is delivered by whichever process runs:
    delivery is driven by gateway.webhook_deliveries, not by memory."""
    receiver = Receiver(failures=0)
    server = RunningServer(receiver.app)
    await server.start()
    try:
        partner = await stack.new_partner()
        url = f"{server.url}/hooks/exchange"
        hook = (
            await partner.post("/v1/webhooks", {"url": url, "events": ["trade.executed"]})
        ).json()
        event_id = "ev_left_by_a_dead_process_" + partner.creds.partner_id[-6:]
        body = orjson.dumps({"event_id": event_id, "type": "trade.executed", "data": {}})
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO gateway.webhook_deliveries (event_id, webhook_id, partner_id,"
                    " event_type, body, attempts, next_attempt_at, created_at)"
                    " VALUES (:e, :w, :p, 'trade.executed', :b, 4, now(), now())"
                ),
                {"e": event_id, "w": hook["webhook_id"], "p": partner.creds.partner_id, "b": body},
            )

        async def delivered() -> bool:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT delivered_at, attempts FROM gateway.webhook_deliveries"
                            " WHERE event_id = :e"
                        ),
                        {"e": event_id},
                    )
                ).one()
            return row.delivered_at is not None and row.attempts == 5

        await wait_until(delivered, message="the queued callback delivered")
        assert [h["x-event-id"] for h, _, _ in receiver.received] == [event_id]
    finally:
        await server.stop()


async def test_a_callback_url_the_parser_refuses_is_a_validation_error(stack: Stack) -> None:
    partner = await stack.new_partner()
    for url in ('https://=Zk0[!"', "https://[::1", "ftp://partner.example/cb", "https://:80/x"):
        response = await partner.post("/v1/webhooks", {"url": url, "events": ["order.updated"]})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "VALIDATION_FAILED"


def settled(member_id: str, net_cash: str) -> dict[str, str]:
    return {
        "member_id": member_id,
        "net_cash": net_cash,
        "fees": "2.00",
        "net_after_fees": net_cash,
        "withdrawals": "0.00",
    }


async def test_each_partner_is_told_of_its_own_members_settlement_only(
    stack: Stack, producer: Producer
) -> None:
    receivers = [Receiver(failures=0), Receiver(failures=0)]
    servers = [RunningServer(r.app) for r in receivers]
    for server in servers:
        await server.start()
    try:
        partners = [await stack.new_partner(), await stack.new_partner()]
        own: list[list[str]] = []
        for partner, server in zip(partners, servers, strict=True):
            hook = {"url": f"{server.url}/hooks/exchange", "events": ["settlement.completed"]}
            assert (await partner.post("/v1/webhooks", hook)).status_code == 201
            own.append([await stack.new_member(partner), await stack.new_member(partner)])
        results = [settled(own[0][0], "-100.00"), settled(own[1][0], "100.00")]
        results.append(settled(own[0][1], "0.00"))
        results.append(settled("m_of_nobody_we_know", "5.00"))
        await producer.settlement_completed("2026-03-02", results)

        async def both_told() -> bool:
            return all(r.received for r in receivers)

        await wait_until(both_told, message="a settlement callback to each partner")
        for receiver, members in zip(receivers, own, strict=True):
            (event,) = [orjson.loads(body) for _, body, _ in receiver.received]
            assert event["type"] == "settlement.completed"
            assert (event["data"]["business_date"], event["data"]["status"]) == (
                "2026-03-02",
                "settled",
            )
            told = {m["member_id"]: m["net_cash"] for m in event["data"]["members"]}
            expected = {r["member_id"]: r["net_cash"] for r in results}
            assert told == {m: expected[m] for m in members if m in expected}
    finally:
        for server in servers:
            await server.stop()
