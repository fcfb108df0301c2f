"""Webhooks: persisted, signed with the partner's secret, retried with backoff until 2xx."""

import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

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
