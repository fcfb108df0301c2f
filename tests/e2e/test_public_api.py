"""The whole exchange through its public API only: all four services as real processes,
real PostgreSQL and RabbitMQ, and the bank simulator standing in for the custody bank."""

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response

from banksim.bank import Bank
from shared.money import parse_fen
from tests.gateway.support import RunningServer
from tests.support.products import instrument_body
from tests.support.public_api import Partner, Staff
from tests.support.services import ServiceProcess
from tests.support.wait import wait_until

ADMIN_TOKEN = "e2e-admin-token"


@dataclass
class Exchange:
    admin: Staff
    operator: Staff
    partner: Partner
    other_partner: Partner
    custody_url: str


@pytest.fixture(scope="module")
async def exchange(e2e_database_url: str, broker_namespace: str) -> AsyncIterator[Exchange]:
    names = ("custody", "matching", "clearing", "gateway")
    probes = {name: ServiceProcess(name) for name in names}
    shared_env = {f"EXCHANGE_{n.upper()}_PORT": str(p.port) for n, p in probes.items()}
    shared_env.update(
        EXCHANGE_BROKER_PREFIX=f"{broker_namespace}.public{secrets.token_hex(2)}",
        EXCHANGE_ADMIN_TOKEN=ADMIN_TOKEN,
        EXCHANGE_DATABASE_URL=e2e_database_url,
        EXCHANGE_EOD_POLL_SECONDS="0.1",
    )
    services = [ServiceProcess(n, probes[n].port, **shared_env) for n in names]
    started: list[ServiceProcess] = []
    clients: list[Staff | Partner] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        url = services[-1].url
        admin = Staff(url, ADMIN_TOKEN)
        clients.append(admin)
        staff_token = await admin.request(
            "POST", "/v1/admin/staff-tokens", {"role": "operator", "name": "ops"}
        )
        operator = Staff(url, staff_token.json()["token"])
        clients.append(operator)
        partners = []
        for name in ("Platform A", "Platform B"):
            body = (await admin.request("POST", "/v1/admin/partners", {"name": name})).json()
            partners.append(Partner(url, body["api_key"], body["api_secret"]))
        clients.extend(partners)
        yield Exchange(admin, operator, partners[0], partners[1], services[0].url)
    finally:
        for client in clients:
            await client.aclose()
        for service in reversed(started):
            await service.stop()


def product(code: str, **overrides: Any) -> dict[str, Any]:
    """Lots of 10 and a 500.00 minimum order value, so those rejects can be reached."""
    return instrument_body(
        code,
        **{
            "issue_size": 100_000,
            "lot_size": 10,
            "min_order_qty": 10,
            "min_order_value": "500.00",
            **overrides,
        },
    )


async def list_product(ex: Exchange, **overrides: Any) -> str:
    code = f"P{secrets.token_hex(4).upper()}"
    response = await ex.admin.request("POST", "/v1/admin/instruments", product(code, **overrides))
    assert response.status_code == 201, response.text
    return code


async def member(
    ex: Exchange, *, qualified: bool = True, risk: str = "C4", partner: Partner | None = None
) -> str:
    response = await (partner or ex.partner).request(
        "POST",
        "/v1/members",
        {
            "external_ref": secrets.token_hex(6),
            "name": "Investor",
            "kind": "individual",
            "qualified": qualified,
            "risk_tolerance": risk,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["member_id"])


async def deposit(ex: Exchange, member_id: str, amount: str) -> str:
    reference = f"BK{secrets.token_hex(5)}"
    response = await ex.operator.request(
        "POST",
        "/v1/admin/deposits",
        {"member_id": member_id, "amount": amount, "bank_reference": reference},
    )
    assert response.status_code == 201, response.text
    return reference


async def allocate(ex: Exchange, code: str, member_id: str, quantity: int) -> None:
    response = await ex.admin.request(
        "POST",
        f"/v1/admin/instruments/{code}/allocations",
        {"allocations": [{"member_id": member_id, "quantity": quantity}]},
    )
    assert response.status_code == 201, response.text


async def place(
    ex: Exchange, member_id: str, code: str, side: str, price: str, quantity: int, **extra: Any
) -> dict[str, Any]:
    body = {
        "client_order_id": secrets.token_hex(8),
        "member_id": member_id,
        "instrument": code,
        "side": side,
        "price": price,
        "quantity": quantity,
        **extra,
    }
    response = await ex.partner.request("POST", "/v1/orders", body)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def order_reaches(ex: Exchange, order_id: str, *statuses: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update((await ex.partner.request("GET", f"/v1/orders/{order_id}")).json())
        return seen.get("status") in statuses

    await wait_until(reached, message=f"order {order_id} {statuses}")
    return seen


async def balances(ex: Exchange, member_id: str) -> dict[str, Any]:
    return dict((await ex.partner.request("GET", f"/v1/members/{member_id}/balances")).json())


async def test_orders_fill_balances_go_pending_and_a_cancel_releases(exchange: Exchange) -> None:
    ex = exchange
    code = await list_product(ex)
    seller, buyer = await member(ex), await member(ex)
    await allocate(ex, code, seller, 1_000)
    await deposit(ex, buyer, "20000.00")

    sell = await place(ex, seller, code, "sell", "100.50", 100)
    assert sell["status"] == "pending_new"
    buy = await place(ex, buyer, code, "buy", "101.00", 40)
    filled = await order_reaches(ex, buy["order_id"], "filled")
    assert (filled["filled_quantity"], filled["remaining_quantity"], filled["average_price"]) == (
        40,
        0,
        "100.5000",
    )
    partial = await order_reaches(ex, sell["order_id"], "partially_filled")
    assert (partial["filled_quantity"], partial["remaining_quantity"]) == (40, 60)

    # Custody applies the fill from its own copy of the book's events (the order view is
    # the gateway's): the balances show it a moment after the order does.
    async def fill_in_balances() -> bool:
        buyer_cash = (await balances(ex, buyer))["cash"]
        seller_cash = (await balances(ex, seller))["cash"]
        return buyer_cash["pending_out"] != "0.00" and seller_cash["pending_in"] != "0.00"

    await wait_until(fill_in_balances, message="the fill in both members' balances")
    # 40 × 100.50 = 4,020.00 at the maker's price; below 50,000.00 each side pays 2.00.
    cash = (await balances(ex, buyer))["cash"]
    assert cash == {
        "settled": "20000.00",
        "held": "0.00",
        "pending_in": "0.00",
        "pending_out": "4022.00",
        "available": "15978.00",
    }
    seller_balances = await balances(ex, seller)
    assert seller_balances["cash"]["pending_in"] == "4018.00"
    holding = next(h for h in seller_balances["holdings"] if h["instrument"] == code)
    assert (holding["settled"], holding["held"], holding["pending_out"], holding["available"]) == (
        1000,
        60,
        40,
        900,
    )
    trades = (await ex.partner.request("GET", f"/v1/trades?member_id={buyer}")).json()["items"]
    assert [(t["price"], t["quantity"], t["amount"], t["fee"], t["liquidity"]) for t in trades] == [
        ("100.50", 40, "4020.00", "2.00", "taker")
    ]
    assert "counterparty" not in str(trades)
    depth = (await ex.partner.request("GET", f"/v1/market/{code}/depth")).json()
    assert depth["asks"] == [["100.50", 60]]

    cancel = await ex.partner.request("DELETE", f"/v1/orders/{sell['order_id']}")
    assert cancel.status_code == 202, cancel.text
    cancelled = await order_reaches(ex, sell["order_id"], "cancelled")
    assert cancelled["cancel_reason"] == "USER"

    async def units_released() -> bool:
        body = await balances(ex, seller)
        return next(h for h in body["holdings"] if h["instrument"] == code)["held"] == 0

    await wait_until(units_released, message="the cancel released the units")
    again = await ex.partner.request("DELETE", f"/v1/orders/{sell['order_id']}")
    assert (again.status_code, again.json()["code"]) == (409, "ORDER_FINAL")
    # Another partner cannot see or cancel this partner's orders.
    foreign = await ex.other_partner.request("GET", f"/v1/orders/{buy['order_id']}")
    assert foreign.status_code == 404


async def test_every_reject_code_is_reachable_with_its_status(exchange: Exchange) -> None:
    ex = exchange
    code = await list_product(ex)  # tick 0.01, lot 10, min 10, min value 500.00, band ±10%
    coarse = await list_product(ex, tick_size="0.10")
    min_twenty = await list_product(ex, lot_size=1, min_order_qty=20)
    wide = await list_product(ex, price_band_pct="60")
    untransferable = await list_product(ex, transferable=False)
    capped = await list_product(ex, max_holders=1)
    seller, buyer = await member(ex), await member(ex)
    unqualified, cautious = await member(ex, qualified=False), await member(ex, risk="C2")
    foreign_member = await member(ex, partner=ex.other_partner)
    await allocate(ex, code, seller, 1_000)
    await allocate(ex, capped, seller, 1_000)
    await deposit(ex, buyer, "1000.00")

    async def rejected(**changes: Any) -> tuple[int, str]:
        body = {
            "client_order_id": secrets.token_hex(8),
            "member_id": buyer,
            "instrument": code,
            "side": "buy",
            "price": "100.00",
            "quantity": 10,
            **changes,
        }
        response = await ex.partner.request("POST", "/v1/orders", body)
        return response.status_code, str(response.json().get("code"))

    # Each case breaks exactly one rule.
    assert await rejected(instrument=coarse, price="100.05") == (422, "PRICE_OFF_TICK")
    assert await rejected(price="110.01") == (422, "PRICE_OUT_OF_BAND")
    assert await rejected(price="110.00") != (422, "PRICE_OUT_OF_BAND")  # the band is inclusive
    assert await rejected(quantity=15) == (422, "QUANTITY_OFF_LOT")
    assert await rejected(instrument=min_twenty, quantity=19) == (422, "BELOW_MIN_QUANTITY")
    assert await rejected(instrument=wide, price="45.00") == (
        422,
        "BELOW_MIN_VALUE",
    )  # 450.00 < 500.00
    assert await rejected(instrument="NOPE0000") == (422, "UNKNOWN_INSTRUMENT")
    assert await rejected(member_id=unqualified) == (422, "NOT_QUALIFIED")
    assert await rejected(member_id=cautious) == (422, "UNSUITABLE_RISK_LEVEL")  # C2 < R3
    assert await rejected(instrument=untransferable) == (422, "NOT_TRANSFERABLE")
    assert await rejected(member_id=foreign_member) == (404, "UNKNOWN_MEMBER")
    assert (await rejected(price=100.0))[0] == 422  # money is never a float

    halted = await ex.admin.request("POST", f"/v1/admin/instruments/{code}/halt")
    assert (halted.status_code, halted.json()["state"]) == (200, "halted")
    assert await rejected() == (422, "INSTRUMENT_NOT_TRADING")
    resumed = await ex.admin.request("POST", f"/v1/admin/instruments/{code}/resume")
    assert resumed.json()["state"] == "trading"

    # Balance checks happen after the 202 and end the order `rejected`.
    broke = await place(ex, buyer, code, "buy", "100.00", 100)  # 10,005.00 > 1,000.00
    assert (await order_reaches(ex, broke["order_id"], "rejected"))[
        "reject_reason"
    ] == "INSUFFICIENT_FUNDS"
    short = await place(ex, buyer, code, "sell", "100.00", 10)
    assert (await order_reaches(ex, short["order_id"], "rejected"))[
        "reject_reason"
    ] == "INSUFFICIENT_UNITS"
    full = await place(ex, buyer, capped, "buy", "100.00", 10)
    assert (await order_reaches(ex, full["order_id"], "rejected"))[
        "reject_reason"
    ] == "HOLDER_LIMIT_REACHED"

    resting = await place(ex, seller, code, "sell", "105.00", 20)
    await order_reaches(ex, resting["order_id"], "open")
    bad_amend = await ex.partner.request(
        "PATCH", f"/v1/orders/{resting['order_id']}", {"quantity": 30}
    )
    assert (bad_amend.status_code, bad_amend.json()["code"]) == (422, "INVALID_AMEND")
    same = {
        "client_order_id": secrets.token_hex(6),
        "member_id": seller,
        "instrument": code,
        "side": "sell",
        "price": "106.00",
        "quantity": 10,
    }
    assert (await ex.partner.request("POST", "/v1/orders", same)).status_code == 202
    assert (await ex.partner.request("POST", "/v1/orders", same)).status_code == 200
    clash = await ex.partner.request("POST", "/v1/orders", {**same, "quantity": 20})
    assert (clash.status_code, clash.json()["code"]) == (409, "DUPLICATE_CLIENT_ORDER_ID")

    key = {"Idempotency-Key": secrets.token_hex(8)}
    new_member = {
        "external_ref": secrets.token_hex(6),
        "name": "A",
        "kind": "individual",
        "qualified": True,
        "risk_tolerance": "C3",
    }
    first = await ex.partner.request("POST", "/v1/members", new_member, headers=key)
    replay = await ex.partner.request("POST", "/v1/members", new_member, headers=key)
    assert (first.status_code, replay.status_code, replay.json()) == (201, 201, first.json())
    reused = await ex.partner.request(
        "POST", "/v1/members", {**new_member, "name": "B"}, headers=key
    )
    assert (reused.status_code, reused.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")


async def mirror_bank(ex: Exchange, day: date) -> Bank:
    """The custody bank as it would stand: every sub-account with its balance at the end of
    the previous day (the exchange's public view), and the deposit notices it sent today."""
    bank = Bank()
    previous = day - timedelta(days=1)
    accounts = (
        await ex.operator.request(
            "GET", f"/v1/admin/accounts?asset=CNY&as_of={previous}&limit=1000"
        )
    ).json()["items"]
    for account in accounts:
        if account["member_id"]:
            bank.open_account(account["sub_account"], account["member_id"])
        if (opening := parse_fen(account["settled"])) > 0:
            bank.deposit(
                previous, account["sub_account"], opening, f"OPEN-{account['sub_account']}"
            )
    async with httpx.AsyncClient(base_url=ex.custody_url) as custody:
        notices = (
            await custody.get(
                "/internal/clearing/cash-movements", params={"business_date": day.isoformat()}
            )
        ).json()["items"]
    for notice in notices:
        if notice["kind"] == "DEPOSIT":
            bank.deposit(
                day, notice["sub_account"], parse_fen(notice["amount"]), notice["reference"]
            )
    return bank


class CallbackReceiver:
    """A partner's webhook endpoint: records every callback it acknowledges."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/callbacks")
        async def callback(request: Request) -> Response:
            self.events.append(orjson.loads(await request.body()))
            return Response(status_code=204)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]


async def test_a_business_day_settles_and_reconciles_with_the_bank(exchange: Exchange) -> None:
    ex = exchange
    receiver = CallbackReceiver()
    server = RunningServer(receiver.app)
    await server.start()
    try:
        await settle_and_reconcile_a_day(ex, receiver, server.url)
    finally:
        await server.stop()


async def settle_and_reconcile_a_day(ex: Exchange, receiver: CallbackReceiver, url: str) -> None:
    registered = await ex.partner.request(
        "POST",
        "/v1/webhooks",
        {"url": f"{url}/callbacks", "events": ["settlement.completed", "withdrawal.updated"]},
    )
    assert registered.status_code == 201, registered.text
    code = await list_product(ex)
    seller, buyer, payer = await member(ex), await member(ex), await member(ex)
    await allocate(ex, code, seller, 1_000)
    await deposit(ex, buyer, "100000.00")
    await deposit(ex, payer, "2000.00")
    requested = await ex.partner.request(
        "POST", f"/v1/members/{payer}/withdrawals", {"amount": "1500.00"}
    )
    assert requested.status_code == 202, requested.text
    withdrawal_id = requested.json()["withdrawal_id"]
    sell = await place(ex, seller, code, "sell", "100.00", 600)
    buy = await place(ex, buyer, code, "buy", "100.00", 600)
    await order_reaches(ex, buy["order_id"], "filled")
    await order_reaches(ex, sell["order_id"], "filled")

    day = date.fromisoformat(
        (await ex.operator.request("GET", "/v1/admin/business-date")).json()["business_date"]
    )
    bank = await mirror_bank(ex, day)
    started = await ex.operator.request("POST", "/v1/admin/eod", {"business_date": day.isoformat()})
    assert started.status_code == 202, started.text
    status: dict[str, Any] = {}

    async def finished() -> bool:
        status.update((await ex.operator.request("GET", f"/v1/admin/eod/{day}")).json())
        return status.get("status") in ("settled", "failed")

    await wait_until(finished, message="EOD finished")
    assert status["status"] == "settled", status
    csv = (await ex.operator.request("GET", f"/v1/admin/settlements/{day}/instructions")).text
    buyer_sub = (await ex.partner.request("GET", f"/v1/members/{buyer}")).json()["sub_account"]
    seller_sub = (await ex.partner.request("GET", f"/v1/members/{seller}")).json()["sub_account"]
    # 600 × 100.00 = 60,000.00, at or above 50,000.00: 5.00 per side.
    assert f"{buyer_sub},{buyer},DEBIT,60000.00,TRADE_NET" in csv
    assert f"{seller_sub},{seller},CREDIT,60000.00,TRADE_NET" in csv
    assert f"{buyer_sub},{buyer},DEBIT,5.00,FEE" in csv
    assert f"{seller_sub},{seller},DEBIT,5.00,FEE" in csv
    cash = (await balances(ex, buyer))["cash"]
    assert (cash["settled"], cash["pending_out"]) == ("39995.00", "0.00")  # 100,000 − 60,000 − 5

    bank.apply_instructions(csv)
    statement = bank.statement(day)
    loaded = await ex.operator.request(
        "POST",
        f"/v1/admin/reconciliations/{day}",
        content=statement.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert loaded.status_code == 201, loaded.text
    report = (await ex.operator.request("GET", f"/v1/admin/reconciliations/{day}")).json()
    assert report["status"] == "balanced", report
    assert report["sub_sub"]["breaks"] == []
    assert report["movements"]["breaks"] == []
    assert (await ex.operator.request("GET", f"/v1/admin/eod/{day}")).json()[
        "status"
    ] == "reconciled"
    withdrawal = (
        await ex.partner.request("GET", f"/v1/members/{payer}/withdrawals/{withdrawal_id}")
    ).json()
    assert withdrawal["status"] == "completed", withdrawal

    def withdrawal_statuses() -> list[str]:
        return [
            e["data"]["status"]
            for e in receiver.of_type("withdrawal.updated")
            if e["data"]["withdrawal_id"] == withdrawal_id
        ]

    async def callbacks_arrived() -> bool:
        return "completed" in withdrawal_statuses() and bool(
            receiver.of_type("settlement.completed")
        )

    await wait_until(callbacks_arrived, message="withdrawal and settlement callbacks")
    assert withdrawal_statuses() == ["pending", "sent", "completed"]
    assert {e["data"]["amount"] for e in receiver.of_type("withdrawal.updated")} >= {"1500.00"}
    (settled,) = [
        e
        for e in receiver.of_type("settlement.completed")
        if e["data"]["business_date"] == str(day)
    ]
    results = {m["member_id"]: m for m in settled["data"]["members"]}
    assert (results[buyer]["net_cash"], results[buyer]["fees"]) == ("-60000.00", "5.00")
    assert (results[seller]["net_cash"], results[seller]["fees"]) == ("60000.00", "5.00")
    assert results[payer]["withdrawals"] == "1500.00"
    for member_id in results:  # only the partner's own members are disclosed to it
        owned = await ex.partner.request("GET", f"/v1/members/{member_id}")
        assert owned.status_code == 200, member_id
