"""Order entry: static validation, client_order_id and Idempotency-Key semantics under
concurrency, tenant isolation, cancel and amend commands written through the outbox."""

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.order_entry_path import OrderEntryPath
from tests.gateway.conftest import Stack
from tests.gateway.support import PartnerApi


def order(member_id: str, instrument: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_order_id": "c-" + secrets.token_hex(8),
        "member_id": member_id,
        "instrument": instrument,
        "side": "buy",
        "price": "100.00",
        "quantity": 30,
        "time_in_force": "GTC",
    }
    body.update(overrides)
    return body


async def outbox_commands(engine: AsyncEngine, order_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT routing_key, body FROM gateway.outbox "
                    "WHERE convert_from(body, 'UTF8') LIKE :pattern ORDER BY id"
                ),
                {"pattern": f"%{order_id}%"},
            )
        ).all()
    found = []
    for routing_key, body in rows:
        envelope = orjson.loads(bytes(body))
        found.append({"routing_key": routing_key, **envelope})
    return found


async def setup(stack: Stack, **instrument: Any) -> tuple[PartnerApi, str, str]:
    partner = await stack.new_partner()
    code = await stack.new_instrument(**instrument)
    member = await stack.new_member(partner)
    return partner, member, code


async def test_an_accepted_order_is_pending_new_and_its_command_is_in_the_outbox(
    stack: Stack, engine: AsyncEngine
) -> None:
    partner, member, code = await setup(stack)
    response = await partner.post("/v1/orders", order(member, code, time_in_force="DAY"))
    assert response.status_code == 202, response.text
    placed = response.json()
    assert placed["status"] == "pending_new"
    assert placed["filled_quantity"] == 0
    assert placed["remaining_quantity"] == 30
    assert placed["average_price"] is None
    assert placed["price"] == "100.00"
    assert placed["business_date"] == stack.clearing.business_date
    commands = await outbox_commands(engine, placed["order_id"])
    assert [c["routing_key"] for c in commands] == ["order.submit"]
    assert commands[0]["payload"] == {
        "order_id": placed["order_id"],
        "client_order_id": placed["client_order_id"],
        "partner_id": partner.creds.partner_id,
        "member_id": member,
        "instrument": code,
        "side": "BUY",
        "price_fen": 10000,
        "quantity": 30,
        "time_in_force": "DAY",
    }
    got = await partner.get(f"/v1/orders/{placed['order_id']}")
    assert got.json() == placed


async def test_every_static_reject_code_with_its_status(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    # tick 0.05, lot 10, min qty 20, min value 2500.00, band ±10% of 100.00, risk R3
    halted = await stack.new_instrument()
    halt = await stack.http.post(
        f"/v1/admin/instruments/{halted}/halt", headers=stack.admin_headers
    )
    assert halt.status_code == 200
    assert halt.json()["state"] == "halted"
    locked = await stack.new_instrument(transferable=False)
    risky = await stack.new_instrument(risk_level="R5")
    unqualified = await stack.new_member(partner, qualified=False)
    cautious = await stack.new_member(partner, risk_tolerance="C2")
    other = await stack.new_partner()
    strangers_member = await stack.new_member(other)
    cases = [
        (order(member, code, price="100.03"), 422, "PRICE_OFF_TICK"),
        (order(member, code, price="110.05"), 422, "PRICE_OUT_OF_BAND"),
        (order(member, code, price="89.95"), 422, "PRICE_OUT_OF_BAND"),
        (order(member, code, quantity=35), 422, "QUANTITY_OFF_LOT"),
        (order(member, code, quantity=10), 422, "BELOW_MIN_QUANTITY"),
        (order(member, code, quantity=20, price="95.00"), 422, "BELOW_MIN_VALUE"),
        (order(member, "NOSUCH0001"), 422, "UNKNOWN_INSTRUMENT"),
        (order(member, halted), 422, "INSTRUMENT_NOT_TRADING"),
        (order(unqualified, code), 422, "NOT_QUALIFIED"),
        (order(cautious, risky), 422, "UNSUITABLE_RISK_LEVEL"),
        (order(member, locked), 422, "NOT_TRANSFERABLE"),
        (order("m_nobody", code), 404, "UNKNOWN_MEMBER"),
        (order(strangers_member, code), 404, "UNKNOWN_MEMBER"),
        (order(member, code, price=100.0), 422, "VALIDATION_FAILED"),
        (order(member, code, quantity="30"), 422, "VALIDATION_FAILED"),
        (order(member, code, side="short"), 422, "VALIDATION_FAILED"),
    ]
    for body, status, code_expected in cases:
        response = await partner.post("/v1/orders", body)
        assert (response.status_code, response.json().get("code")) == (status, code_expected), (
            body,
            response.text,
        )
    # The band is inclusive at both ends; sells need neither qualification nor suitability.
    for price in ("90.00", "110.00"):
        assert (
            await partner.post("/v1/orders", order(member, code, price=price))
        ).status_code == 202
    sell = order(unqualified, risky, side="sell")
    assert (await partner.post("/v1/orders", sell)).status_code == 202
    listed = await partner.get("/v1/orders", params={"member_id": member})
    assert len(listed.json()["items"]) == 2


async def test_client_order_id_repeat_and_conflict(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    body = order(member, code)
    first = await partner.post("/v1/orders", body)
    assert first.status_code == 202
    again = await partner.post("/v1/orders", body)
    assert again.status_code == 200
    assert again.json()["order_id"] == first.json()["order_id"]
    changed = await partner.post("/v1/orders", {**body, "quantity": 40})
    assert (changed.status_code, changed.json()["code"]) == (409, "DUPLICATE_CLIENT_ORDER_ID")
    # Another partner may use the same client_order_id.
    other = await stack.new_partner()
    other_member = await stack.new_member(other)
    theirs = await other.post("/v1/orders", {**body, "member_id": other_member})
    assert theirs.status_code == 202


async def test_a_repeat_answers_with_its_order_even_when_the_checks_now_refuse(
    stack: Stack,
) -> None:
    partner, member, code = await setup(stack)
    body = order(member, code)
    first = await partner.post("/v1/orders", body)
    assert first.status_code == 202
    halt = await stack.http.post(f"/v1/admin/instruments/{code}/halt", headers=stack.admin_headers)
    assert halt.status_code == 200
    fresh = await partner.post("/v1/orders", order(member, code))
    assert (fresh.status_code, fresh.json()["code"]) == (422, "INSTRUMENT_NOT_TRADING")
    again = await partner.post("/v1/orders", body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    changed = await partner.post("/v1/orders", {**body, "quantity": 40})
    assert (changed.status_code, changed.json()["code"]) == (409, "DUPLICATE_CLIENT_ORDER_ID")
    batch = await partner.post(
        "/v1/orders/batch", {"orders": [order(member, code), body, {**body, "quantity": 40}]}
    )
    results = batch.json()["results"]
    assert results[0]["code"] == "INSTRUMENT_NOT_TRADING"
    assert results[1] == first.json()
    assert results[2]["code"] == "DUPLICATE_CLIENT_ORDER_ID"


async def test_twenty_concurrent_identical_orders_make_one_order(
    stack: Stack, engine: AsyncEngine
) -> None:
    partner, member, code = await setup(stack)
    body = order(member, code)
    responses = await asyncio.gather(*(partner.post("/v1/orders", body) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [202], [r.text for r in responses if r.status_code >= 300]
    order_ids = {r.json()["order_id"] for r in responses}
    assert len(order_ids) == 1
    assert len(await outbox_commands(engine, order_ids.pop())) == 1
    # The same with one Idempotency-Key: one order, every answer the first one's.
    body = order(member, code)
    headers = {"Idempotency-Key": "k-" + secrets.token_hex(8)}
    responses = await asyncio.gather(
        *(partner.post("/v1/orders", body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["order_id"] for r in responses}) == 1


async def test_idempotency_key_replays_and_refuses_another_body(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    key = {"Idempotency-Key": "idem-" + secrets.token_hex(8)}
    body = order(member, code)
    first = await partner.post("/v1/orders", body, headers=key)
    replay = await partner.post("/v1/orders", body, headers=key)
    assert first.status_code == replay.status_code == 202
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await partner.post("/v1/orders", order(member, code), headers=key)
    assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    # Keys are scoped to the caller: another partner may use the same key.
    stranger = await stack.new_partner()
    stranger_member = await stack.new_member(stranger)
    theirs = await stranger.post("/v1/orders", order(stranger_member, code), headers=key)
    assert theirs.status_code == 202
    # A rejected request is replayed too (its answer is about the request).
    bad_key = {"Idempotency-Key": "idem-" + secrets.token_hex(8)}
    bad = order(member, code, price="100.03")
    assert (await partner.post("/v1/orders", bad, headers=bad_key)).status_code == 422
    assert (await partner.post("/v1/orders", bad, headers=bad_key)).json()[
        "code"
    ] == "PRICE_OFF_TICK"
    too_long = await partner.post(
        "/v1/orders", order(member, code), headers={"Idempotency-Key": "x" * 256}
    )
    assert too_long.status_code == 422
    # Staff POSTs take keys too.
    staff_key = {**stack.admin_headers, "Idempotency-Key": "idem-" + secrets.token_hex(8)}
    made = await stack.http.post("/v1/admin/partners", json={"name": "once"}, headers=staff_key)
    again = await stack.http.post("/v1/admin/partners", json={"name": "once"}, headers=staff_key)
    assert made.status_code == again.status_code == 201
    assert made.json()["partner_id"] == again.json()["partner_id"]


async def test_a_partner_cannot_see_or_touch_another_partners_orders(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    placed = (await partner.post("/v1/orders", order(member, code))).json()
    stranger = await stack.new_partner()
    path = f"/v1/orders/{placed['order_id']}"
    for response in (
        await stranger.get(path),
        await stranger.delete(path),
        await stranger.patch(path, {"quantity": 20}),
        await stranger.get("/v1/orders", params={"member_id": member}),
        await stranger.get("/v1/trades", params={"member_id": member}),
        await stranger.get(f"/v1/members/{member}"),
        await stranger.get(f"/v1/members/{member}/balances"),
        await stranger.post(f"/v1/members/{member}/withdrawals", {"amount": "1.00"}),
    ):
        assert response.status_code == 404, response.text
    assert (await stranger.get("/v1/orders")).json()["items"] == []
    assert (await partner.get(path)).status_code == 200


async def test_cancel_is_recorded_once_and_final_orders_refuse(
    stack: Stack, engine: AsyncEngine
) -> None:
    partner, member, code = await setup(stack)
    placed = (await partner.post("/v1/orders", order(member, code))).json()
    path = f"/v1/orders/{placed['order_id']}"
    first = await partner.delete(path)
    second = await partner.delete(path)
    assert first.status_code == second.status_code == 202
    commands = await outbox_commands(engine, placed["order_id"])
    assert [c["routing_key"] for c in commands] == ["order.submit", "order.cancel"]
    assert commands[1]["payload"] == {
        "order_id": placed["order_id"],
        "member_id": member,
        "instrument": code,
    }
    assert commands[0]["stream"] == commands[1]["stream"]
    assert commands[1]["sequence"] > commands[0]["sequence"]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE gateway.orders SET status = 'filled', filled_quantity = quantity WHERE order_id = :o"
            ),
            {"o": placed["order_id"]},
        )
    final = await partner.delete(path)
    assert (final.status_code, final.json()["code"]) == (409, "ORDER_FINAL")
    assert (await partner.delete("/v1/orders/o_nothing")).status_code == 404


async def test_amend_rules(stack: Stack, engine: AsyncEngine) -> None:
    partner, member, code = await setup(stack)
    placed = (await partner.post("/v1/orders", order(member, code, quantity=50))).json()
    path = f"/v1/orders/{placed['order_id']}"
    for quantity in (50, 60, 0, 25):
        response = await partner.patch(path, {"quantity": quantity})
        assert response.status_code == 422, (quantity, response.text)
        assert response.json()["code"] in ("INVALID_AMEND", "VALIDATION_FAILED")
    assert (await partner.patch(path, {"quantity": 50})).json()["code"] == "INVALID_AMEND"
    accepted = await partner.patch(path, {"quantity": 30})
    assert accepted.status_code == 202
    commands = await outbox_commands(engine, placed["order_id"])
    assert commands[-1]["routing_key"] == "order.amend"
    assert commands[-1]["payload"]["quantity"] == 30


async def test_batch_answers_each_order_in_order(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    good = order(member, code)
    bodies = [good, order(member, code, price="100.03"), good, order(member, code, quantity=40)]
    response = await partner.post("/v1/orders/batch", {"orders": bodies})
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert results[0]["status"] == "pending_new"
    assert results[1]["code"] == "PRICE_OFF_TICK"
    assert results[2]["order_id"] == results[0]["order_id"]
    assert results[3]["status"] == "pending_new"
    too_many = await partner.post("/v1/orders/batch", {"orders": [order(member, code)] * 101})
    assert too_many.status_code == 422


async def test_order_list_pages_newest_first(stack: Stack) -> None:
    partner, member, code = await setup(stack)
    ids = [
        (await partner.post("/v1/orders", order(member, code))).json()["order_id"] for _ in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "instrument": code}
        if cursor:
            params["cursor"] = cursor
        page = (await partner.get("/v1/orders", params=params)).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    filtered = await partner.get("/v1/orders", params={"status": "filled", "member_id": member})
    assert filtered.json()["items"] == []


async def test_concurrent_batches_sharing_client_order_ids_make_each_order_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    partner, member, code = await setup(stack)
    bodies = [order(member, code) for _ in range(30)]
    batches = [bodies, list(reversed(bodies)), bodies[10:] + bodies[:10]] * 3
    answers = await asyncio.gather(
        *(partner.post("/v1/orders/batch", {"orders": batch}) for batch in batches)
    )
    assert {a.status_code for a in answers} == {202}, [
        a.text for a in answers if a.status_code != 202
    ]
    by_client_id: dict[str, set[str]] = {}
    for answer in answers:
        for result in answer.json()["results"]:
            by_client_id.setdefault(result["client_order_id"], set()).add(result["order_id"])
    assert len(by_client_id) == 30
    assert all(len(ids) == 1 for ids in by_client_id.values())
    async with engine.connect() as conn:
        submits = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM gateway.outbox WHERE routing_key = 'order.submit'"
                    " AND convert_from(body, 'UTF8') LIKE :member"
                ),
                {"member": f"%{member}%"},
            )
        ).scalar_one()
    assert submits == 30


async def test_an_oversized_body_is_413(stack: Stack) -> None:
    partner = await stack.new_partner()
    huge = {"orders": [], "padding": "x" * (17 * 1024 * 1024)}
    response = await partner.post("/v1/orders/batch", huge)
    assert (response.status_code, response.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_the_edges_order_entry_answers_as_the_framework_route(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Order POSTs skip FastAPI's layers (order_entry_path.py); with a query string they go
    through the route. Both must answer alike, and a body the fast path cannot validate
    goes the route's way (its validation problem document)."""
    taken: list[str] = []
    original = OrderEntryPath.__call__

    async def spy(self: OrderEntryPath, scope: Any, receive: Any, send: Any, body: bytes) -> None:
        taken.append(scope["path"])
        await original(self, scope, receive, send, body)

    monkeypatch.setattr(OrderEntryPath, "__call__", spy)
    partner, member, code = await setup(stack)
    varying = {"order_id", "client_order_id", "created_at", "updated_at"}

    def same_parts(response: httpx.Response) -> tuple[Any, ...]:
        def strip(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in varying}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value

        names = {n for n in response.headers if n not in ("date", "content-length")}
        return response.status_code, response.headers["content-type"], names, strip(response.json())

    repeat = order(member, code)
    assert (await partner.post("/v1/orders", repeat)).status_code == 202
    taken.clear()
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("/v1/orders", lambda: order(member, code)),
        ("/v1/orders", lambda: order(member, "NOSUCH01")),
        ("/v1/orders", lambda: order("m_nobody", code)),
        ("/v1/orders", lambda: order(member, code, price="100.03")),
        ("/v1/orders", lambda: repeat),
        ("/v1/orders", lambda: {**repeat, "quantity": 40}),
        ("/v1/orders/batch", lambda: {"orders": [order(member, code), order(member, "NOSUCH01")]}),
    ]
    for path, make in cases:
        fast = await partner.post(path, make())
        routed = await partner.post(path, make(), params={"via": "route"})
        assert same_parts(fast) == same_parts(routed), (path, fast.text, routed.text)
    assert taken == [path for path, _ in cases]
    invalid = await partner.post("/v1/orders", {**order(member, code), "quantity": "many"})
    assert (invalid.status_code, invalid.json()["code"]) == (422, "VALIDATION_FAILED")
    assert len(taken) == len(cases) + 1  # it was offered to the fast path, which passed it on
