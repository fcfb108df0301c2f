"""The commands the gateway writes reach the broker: order.submit, order.cancel and
order.amend with the contract's payloads, in order, through the outbox relay."""

from typing import Any

import aio_pika

from shared.messaging.envelope import Envelope
from tests.gateway.conftest import Stack
from tests.gateway.test_orders import order, setup
from tests.support import env
from tests.support.wait import wait_until


async def test_submit_cancel_and_amend_are_published_in_order(
    stack: Stack, gateway_namespace: str
) -> None:
    connection = await aio_pika.connect(env.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        # A private queue bound like custody.commands, so this test sees what custody would.
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in ("order.submit", "order.cancel", "order.amend", "instrument.control"):
            await queue.bind(f"{gateway_namespace}.events", routing_key=key)
        seen: list[tuple[str, Envelope]] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                seen.append((message.routing_key or "", Envelope.decode(message.body)))

        await queue.consume(on_message)
        partner, member, code = await setup(stack)
        placed = (await partner.post("/v1/orders", order(member, code, quantity=50))).json()
        path = f"/v1/orders/{placed['order_id']}"
        assert (await partner.patch(path, {"quantity": 30})).status_code == 202
        assert (await partner.delete(path)).status_code == 202
        halted = await stack.http.post(
            f"/v1/admin/instruments/{code}/halt", headers=stack.admin_headers
        )
        assert halted.status_code == 200

        def mine() -> list[tuple[str, dict[str, Any]]]:
            return [
                (key, e.payload)
                for key, e in seen
                if e.payload.get("order_id") == placed["order_id"]
                or e.payload.get("instrument") == code
            ]

        async def all_four() -> bool:
            return len(mine()) == 4

        await wait_until(all_four, message="the order's commands on the broker")
        keys = [key for key, _ in mine()]
        assert keys[:3] == ["order.submit", "order.amend", "order.cancel"]
        assert keys[3] == "instrument.control"
        submit = mine()[0][1]
        assert submit["partner_id"] == partner.creds.partner_id
        assert submit["price_fen"] == 10000
        assert mine()[1][1] == {
            "order_id": placed["order_id"],
            "member_id": member,
            "instrument": code,
            "quantity": 30,
        }
        assert mine()[3][1] == {"instrument": code, "action": "halt"}
        envelopes = [e for _, e in seen if e.payload.get("order_id") == placed["order_id"]]
        assert len({e.stream for e in envelopes}) == 1
        assert [e.sequence for e in envelopes] == sorted(e.sequence for e in envelopes)
        assert all(e.producer == "gateway" for e in envelopes)
