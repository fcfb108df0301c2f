"""The order and trade views follow real book and custody events consumed from the
broker by the running gateway; the WebSocket pushes them."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.auth import signature
from tests.gateway.conftest import Stack
from tests.gateway.events import Producer, accepted, cancelled, filled, rested, trade
from tests.gateway.support import PartnerApi
from tests.gateway.test_orders import order
from tests.support.wait import wait_until

PERMISSIVE = {"lot_size": 1, "min_order_qty": 1, "min_order_value": "0.01", "tick_size": "0.01"}


async def place(partner: PartnerApi, body: dict[str, Any]) -> dict[str, Any]:
    response = await partner.post("/v1/orders", body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def eventually(partner: PartnerApi, order_id: str, **expected: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal seen
        seen = (await partner.get(f"/v1/orders/{order_id}")).json()
        return all(seen.get(k) == v for k, v in expected.items())

    try:
        await wait_until(matches, timeout=15, message=f"order {order_id} to reach {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen}") from None
    return seen


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def wait_for(self, predicate: Any, message: str) -> dict[str, Any]:
        async def seen() -> bool:
            while True:
                try:
                    raw = await asyncio.wait_for(self.connection.recv(), 0.05)
                except TimeoutError:
                    break
                self.messages.append(orjson.loads(raw))
            return any(predicate(m) for m in self.messages)

        await wait_until(seen, timeout=15, message=message)
        return next(m for m in self.messages if predicate(m))


async def open_ws(stack: Stack, partner: PartnerApi) -> AsyncIterator[WsClient]:
    ts = str(int(time.time() * 1000))
    headers = {
        "X-Api-Key": partner.creds.api_key,
        "X-Timestamp": ts,
        "X-Signature": signature(partner.creds.api_secret, ts, "GET", "/v1/ws", b""),
    }
    url = stack.url.replace("http://", "ws://") + "/v1/ws"
    async with connect(url, additional_headers=headers) as connection:
        yield WsClient(connection)


async def test_fills_fees_average_price_and_ioc_remainder(stack: Stack, producer: Producer) -> None:
    code = await stack.new_instrument(**PERMISSIVE)
    buyer_partner = await stack.new_partner()
    seller_partner = await stack.new_partner()
    buyer = await stack.new_member(buyer_partner)
    seller = await stack.new_member(seller_partner)
    day = stack.clearing.business_date
    makers = [
        await place(seller_partner, order(seller, code, side="sell", price=p, quantity=q))
        for p, q in (("100.00", 4), ("100.00", 3), ("100.05", 1))
    ]
    taker = await place(
        buyer_partner,
        order(buyer, code, side="buy", price="100.05", quantity=10, time_in_force="IOC"),
    )
    ws_gen = open_ws(stack, buyer_partner)
    ws = await ws_gen.__anext__()
    try:
        await ws.send(
            {"op": "subscribe", "channels": ["orders", f"trades:{code}", f"depth:{code}"]}
        )
        await ws.wait_for(lambda m: m.get("type") == "subscribed", "subscription")
        await ws.wait_for(lambda m: m.get("channel") == f"depth:{code}", "depth snapshot")
        for maker in makers:
            await producer.book(code, accepted(maker), rested(maker))
        for maker in makers:
            await eventually(seller_partner, maker["order_id"], status="open")
        await producer.book(
            code,
            accepted(taker),
            trade(makers[0], taker, 4, day),
            filled(makers[0], 4),
            trade(makers[1], taker, 3, day),
            filled(makers[1], 3),
            trade(makers[2], taker, 1, day),
            filled(makers[2], 1),
            filled(taker, 8),
            cancelled(taker, "IOC_REMAINDER", 8),
        )
        final = await eventually(buyer_partner, taker["order_id"], status="cancelled")
        # 7 x 100.00 + 1 x 100.05 = 800.05 over 8 units = 100.00625 -> half-up 100.0063
        assert final["filled_quantity"] == 8
        assert final["remaining_quantity"] == 2
        assert final["average_price"] == "100.0063"
        assert final["cancel_reason"] == "IOC_REMAINDER"
        for maker in makers:
            done = await eventually(seller_partner, maker["order_id"], status="filled")
            assert done["remaining_quantity"] == 0
        assert (await buyer_partner.get(f"/v1/orders/{makers[0]['order_id']}")).status_code == 404

        trades = (await buyer_partner.get("/v1/trades", params={"instrument": code})).json()[
            "items"
        ]
        assert [(t["quantity"], t["price"], t["fee"], t["liquidity"]) for t in trades] == [
            (1, "100.05", "1.00", "taker"),
            (3, "100.00", "2.00", "taker"),
            (4, "100.00", "2.00", "taker"),
        ]
        assert all(t["settlement_status"] == "pending" and t["side"] == "buy" for t in trades)
        assert trades[0]["amount"] == "100.05"
        leaked = {"maker_member_id", "taker_member_id", "counterparty", "maker_order_id"}
        assert not leaked & set(trades[0])
        assert all(seller not in orjson.dumps(t).decode() for t in trades)
        sold = (await seller_partner.get("/v1/trades", params={"member_id": seller})).json()[
            "items"
        ]
        assert sorted((t["liquidity"], t["side"], t["fee"]) for t in sold) == [
            ("maker", "sell", "2.00"),
            ("maker", "sell", "2.00"),
            ("maker", "sell", "2.00"),
        ]
        stack.clearing.settled.add(day)

        async def settled() -> bool:
            page = (await buyer_partner.get("/v1/trades", params={"business_date": day})).json()
            return {t["settlement_status"] for t in page["items"]} == {"settled"}

        await wait_until(settled, message="trades shown settled once clearing settled the day")

        pushed = await ws.wait_for(
            lambda m: (
                m.get("channel") == "orders"
                and m["data"]["order_id"] == taker["order_id"]
                and m["data"]["status"] == "cancelled"
            ),
            "the taker's final state on the WebSocket",
        )
        assert pushed["data"]["average_price"] == "100.0063"
        await ws.wait_for(
            lambda m: m.get("channel") == f"trades:{code}" and m["data"]["price"] == "100.05",
            "a public trade on the WebSocket",
        )
        assert not any(
            m.get("channel") == "orders" and m["data"]["member_id"] == seller for m in ws.messages
        )
    finally:
        await ws_gen.aclose()


async def test_cancel_amend_reject_expiry_and_day_roll(stack: Stack, producer: Producer) -> None:
    code = await stack.new_instrument(**PERMISSIVE)
    partner = await stack.new_partner()
    member = await stack.new_member(partner)
    resting = await place(partner, order(member, code, price="99.00", quantity=5))
    await producer.book(code, accepted(resting), rested(resting))
    await eventually(partner, resting["order_id"], status="open")
    assert (
        await partner.patch(f"/v1/orders/{resting['order_id']}", {"quantity": 3})
    ).status_code == 202
    await producer.book(
        code,
        {
            "type": "OrderAmended",
            "order_id": resting["order_id"],
            "quantity": 3,
            "filled_quantity": 0,
            "remaining_quantity": 3,
            "released_quantity": 2,
        },
    )
    await eventually(partner, resting["order_id"], quantity=3, remaining_quantity=3, status="open")
    assert (await partner.delete(f"/v1/orders/{resting['order_id']}")).status_code == 202
    await producer.book(code, {**cancelled(resting, "USER"), "remaining_quantity": 3})
    done = await eventually(partner, resting["order_id"], status="cancelled")
    assert done["cancel_reason"] == "USER"
    refused = await partner.delete(f"/v1/orders/{resting['order_id']}")
    assert (refused.status_code, refused.json()["code"]) == (409, "ORDER_FINAL")

    poor = await place(partner, order(member, code))
    await producer.rejected(poor, "INSUFFICIENT_FUNDS")
    rejected = await eventually(partner, poor["order_id"], status="rejected")
    assert rejected["reject_reason"] == "INSUFFICIENT_FUNDS"

    day_order = await place(partner, order(member, code, time_in_force="DAY"))
    await producer.book(code, accepted(day_order), rested(day_order))
    await eventually(partner, day_order["order_id"], status="open")
    await producer.book(
        code,
        {"type": "DayRolled", "previous_date": "2026-11-20", "business_date": "2099-01-02"},
        {
            "type": "OrderExpired",
            "order_id": day_order["order_id"],
            "filled_quantity": 0,
            "remaining_quantity": day_order["quantity"],
        },
    )
    await eventually(partner, day_order["order_id"], status="expired")

    async def dated(day: str) -> bool:
        return (await place(partner, order(member, code)))["business_date"] == day

    await wait_until(lambda: dated("2099-01-02"), message="DayRolled applied")
    await producer.day_rolled("2099-01-02", "2099-01-03")

    await wait_until(lambda: dated("2099-01-03"), message="business_date.rolled applied")


async def test_halt_delist_and_instrument_updates_reach_order_entry(
    stack: Stack, producer: Producer, engine: AsyncEngine
) -> None:
    code = await stack.new_instrument(**PERMISSIVE)
    partner = await stack.new_partner()
    member = await stack.new_member(partner)
    resting = await place(partner, order(member, code))
    await producer.book(code, accepted(resting), rested(resting))
    await producer.book(
        code, {"type": "BookStateChanged", "previous_state": "trading", "state": "halted"}
    )

    async def refused() -> bool:
        response = await partner.post("/v1/orders", order(member, code))
        return response.status_code == 422 and response.json()["code"] == "INSTRUMENT_NOT_TRADING"

    await wait_until(refused, message="halt seen by order entry")
    # A partial update (the holder count) changes neither the state nor the other fields.
    await producer.instrument_updated({"code": code, "holder_count": 3})

    async def merged() -> bool:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT state, data FROM gateway.instruments WHERE code = :c"), {"c": code}
                )
            ).one()
        return bool(
            row.data.get("holder_count") == 3 and row.state == "halted" and row.data["tick_size"]
        )

    await wait_until(merged, message="the partial update merged")
    assert await refused()
    instrument = {**stack.custody.instruments[code], "state": "trading", "reference_price": "50.00"}
    await producer.instrument_updated(instrument)

    async def resumed_with_new_band() -> bool:
        response = await partner.post("/v1/orders", order(member, code, price="100.00"))
        return response.status_code == 422 and response.json()["code"] == "PRICE_OUT_OF_BAND"

    await wait_until(resumed_with_new_band, message="instrument.updated applied")
    assert (await partner.post("/v1/orders", order(member, code, price="50.00"))).status_code == 202
    await producer.book(
        code,
        {"type": "BookStateChanged", "previous_state": "trading", "state": "delisted"},
        cancelled(resting, "DELISTED"),
    )
    gone = await eventually(partner, resting["order_id"], status="cancelled")
    assert gone["cancel_reason"] == "DELISTED"
    await wait_until(refused, message="delisting seen by order entry")


async def test_a_redelivered_book_message_changes_nothing(stack: Stack, producer: Producer) -> None:
    code = await stack.new_instrument(**PERMISSIVE)
    partner = await stack.new_partner()
    member = await stack.new_member(partner)
    other = await stack.new_member(partner)
    maker = await place(partner, order(member, code, side="sell", quantity=5))
    taker = await place(partner, order(other, code, quantity=2))
    from shared.contracts import book_routing_key
    from shared.ids import uuid7
    from shared.messaging.broker import OutgoingMessage
    from shared.messaging.envelope import Envelope

    events = [
        accepted(maker),
        rested(maker),
        accepted(taker),
        trade(maker, taker, 2, "2026-11-20"),
        filled(maker, 2),
        filled(taker, 2),
    ]
    envelope = Envelope(
        message_id=str(uuid7()),
        type="book.events",
        producer="matching",
        stream=f"book:{code}",
        sequence=1,
        payload={"instrument": code, "events": [{**e, "seq": i + 1} for i, e in enumerate(events)]},
    )
    message = OutgoingMessage.from_envelope(book_routing_key(code), envelope)
    await producer.broker.publish([message])
    await producer.broker.publish([message])
    await eventually(partner, taker["order_id"], status="filled")
    await eventually(partner, maker["order_id"], status="partially_filled", filled_quantity=2)
    trades = (await partner.get("/v1/trades", params={"instrument": code})).json()["items"]
    assert len(trades) == 2


async def test_messages_applied_in_one_batch_build_on_each_other(
    stack: Stack, producer: Producer
) -> None:
    """The view updater loads a batch's orders once and writes them back once: messages
    of one bundle (always one batch) about the same orders must see each other's changes,
    and a trade repeated under another message id must not fill twice."""
    from shared.contracts import book_routing_key
    from shared.ids import uuid7
    from shared.messaging.broker import OutgoingMessage, bundle
    from shared.messaging.envelope import Envelope

    code = await stack.new_instrument(**PERMISSIVE)
    partner = await stack.new_partner()
    seller, buyer = await stack.new_member(partner), await stack.new_member(partner)
    maker = await place(partner, order(seller, code, side="sell", quantity=5))
    taker = await place(partner, order(buyer, code, quantity=2))
    second = await place(partner, order(buyer, code, quantity=3))
    first_trade = trade(maker, taker, 2, "2026-11-20")
    per_message = [
        [accepted(maker), rested(maker)],
        [accepted(taker), first_trade, filled(maker, 2), filled(taker, 2)],
        [first_trade],  # the same trade again, in another message
        [accepted(second), trade(maker, second, 3, "2026-11-20"), filled(maker, 5)],
        [filled(second, 3)],
    ]
    seq = 0
    messages = []
    for sequence, events in enumerate(per_message, start=1):
        numbered = []
        for event in events:
            seq += 1
            numbered.append({**event, "seq": seq})
        envelope = Envelope(
            message_id=str(uuid7()),
            type="book.events",
            producer="matching",
            stream=f"book:{code}",
            sequence=sequence,
            payload={"instrument": code, "events": numbered},
        )
        messages.append(OutgoingMessage.from_envelope(book_routing_key(code), envelope))
    packed = bundle(messages, 100)
    assert len(packed) == 1
    await producer.broker.publish(packed)
    views = [
        await eventually(partner, maker["order_id"], status="filled", filled_quantity=5),
        await eventually(partner, taker["order_id"], status="filled", filled_quantity=2),
        await eventually(partner, second["order_id"], status="filled", filled_quantity=3),
    ]
    # A trade counted twice would show in the filled amount, hence the average price.
    assert [v["average_price"] for v in views] == ["100.0000"] * 3
    trades = (await partner.get("/v1/trades", params={"instrument": code})).json()["items"]
    assert sorted((t["order_id"], t["quantity"]) for t in trades) == sorted(
        [
            (maker["order_id"], 2),
            (taker["order_id"], 2),
            (maker["order_id"], 3),
            (second["order_id"], 3),
        ]
    )


async def test_a_cancel_the_book_refused_may_be_sent_again(
    stack: Stack, producer: Producer, engine: Any
) -> None:
    from tests.gateway.test_orders import outbox_commands

    code = await stack.new_instrument(**PERMISSIVE)
    partner = await stack.new_partner()
    member = await stack.new_member(partner)
    resting = await place(partner, order(member, code))
    await producer.book(code, accepted(resting), rested(resting))
    await eventually(partner, resting["order_id"], status="open")
    assert (await partner.delete(f"/v1/orders/{resting['order_id']}")).status_code == 202
    await producer.book(
        code, {"type": "CancelRejected", "order_id": resting["order_id"], "reason": "UNKNOWN_ORDER"}
    )

    async def resent() -> bool:
        await partner.delete(f"/v1/orders/{resting['order_id']}")
        commands = await outbox_commands(engine, resting["order_id"])
        return [c["routing_key"] for c in commands].count("order.cancel") == 2

    await wait_until(resent, message="a second cancel after CancelRejected")


async def test_a_second_gateway_instance_pushes_to_its_own_websocket_clients(
    stack: Stack, producer: Producer
) -> None:
    """Only one instance consumes gateway.events; the pushes reach the others through
    PostgreSQL, so a WebSocket client may connect to any instance."""
    from services.gateway.app import create_app
    from tests.gateway.support import RunningServer

    second = RunningServer(create_app(stack.settings.model_copy()))
    await second.start()
    try:
        code = await stack.new_instrument(**PERMISSIVE)
        partner = await stack.new_partner()
        member = await stack.new_member(partner)
        resting = await place(partner, order(member, code))
        other_stack = Stack(
            second.url, stack.settings, stack.custody, stack.clearing, stack.http, {}
        )
        ws_gen = open_ws(other_stack, partner)
        ws = await ws_gen.__anext__()
        try:
            await ws.send({"op": "subscribe", "channels": ["orders", f"trades:{code}"]})
            await ws.wait_for(lambda m: m.get("type") == "subscribed", "subscription")
            await producer.book(code, accepted(resting), rested(resting))
            pushed = await ws.wait_for(
                lambda m: (
                    m.get("channel") == "orders" and m["data"]["order_id"] == resting["order_id"]
                ),
                "the order's update on the second instance",
            )
            assert pushed["data"]["status"] == "open"
        finally:
            await ws_gen.aclose()
    finally:
        await second.stop()
