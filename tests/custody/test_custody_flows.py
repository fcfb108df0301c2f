"""Custody end to end through its internal routes and its message handlers, on the real
database: onboarding, listing, reservations, fills, releases, settlement, cash in and out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody import ledger
from services.custody.app import create_runtime
from services.custody.routes import router
from services.custody.settings import CustodySettings
from shared.app import create_service_app
from shared.db import unit_of_work
from shared.ids import new_id
from tests.custody.helpers import (
    allocate,
    assert_ledger_ok,
    book,
    cash_fen,
    deposit,
    instrument_body,
    new_member,
    new_product,
    past_date,
    submit,
    trade_event,
    units,
)

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def client(settings: CustodySettings, factory: Factory) -> AsyncIterator[httpx.AsyncClient]:
    runtime = create_runtime(settings)
    runtime.session_factory = factory
    app = create_service_app(runtime, title="Custody", routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://custody") as client:
        yield client


async def outbox(factory: Factory, routing_prefix: str, needle: str) -> list[dict[str, Any]]:
    """Payloads of outbox messages whose routing key starts with the prefix and whose body
    mentions the needle."""
    async with factory() as session:
        rows = await session.execute(
            text(
                "SELECT body FROM custody.outbox WHERE routing_key LIKE :p "
                "AND position(:n in convert_from(body, 'UTF8')) > 0 ORDER BY id"
            ),
            {"p": routing_prefix + "%", "n": needle},
        )
        return [orjson.loads(r.body)["payload"] for r in rows]


async def test_member_onboarding_assigns_a_sub_account_and_refuses_a_repeat(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "partner_id": "p_on",
        "external_ref": new_id("x"),
        "name": "Li Lei",
        "kind": "individual",
        "qualified": True,
        "risk_tolerance": "C3",
    }
    created = await client.post("/internal/members", json=body)
    assert created.status_code == 201
    member = created.json()
    assert member["member_id"].startswith("m_")
    assert member["sub_account"].startswith("SUB")
    assert member["sub_account"][3:].isdigit()
    again = await client.post("/internal/members", json=body)
    assert again.status_code == 409
    assert again.json()["code"] == "MEMBER_EXISTS"
    mine = await client.get(f"/internal/members/{member['member_id']}?partner_id=p_on")
    assert mine.status_code == 200
    assert mine.json() == member
    theirs = await client.get(f"/internal/members/{member['member_id']}?partner_id=p_other")
    assert theirs.status_code == 404
    assert theirs.json()["code"] == "UNKNOWN_MEMBER"
    balances = await client.get(f"/internal/members/{member['member_id']}/balances")
    assert balances.json() == {
        "member_id": member["member_id"],
        "cash": {
            "settled": "0.00",
            "held": "0.00",
            "pending_in": "0.00",
            "pending_out": "0.00",
            "available": "0.00",
        },
        "holdings": [],
    }


async def test_listing_puts_the_issue_with_the_issuer_and_tells_the_shard_and_gateway(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    code = "L" + new_id("x")[-8:]
    payload = instrument_body(code, reference_price="100.05", tick_size="0.10").model_dump(
        mode="json"
    )
    created = await client.post("/internal/instruments", json=payload)
    assert created.status_code == 201, created.text
    instrument = created.json()
    assert instrument["state"] == "trading"
    assert instrument["holder_count"] == 0
    assert instrument["price_band_low"] == "90.10"
    assert instrument["price_band_high"] == "110.00"
    assert (await client.post("/internal/instruments", json=payload)).json()["code"] == (
        "INSTRUMENT_EXISTS"
    )
    bad = await client.post("/internal/instruments", json={**payload, "code": "bad code"})
    assert bad.status_code == 422
    assert bad.json()["code"] == "INVALID_INSTRUMENT"
    listed = await outbox(factory, "matching.shard.", code)
    assert listed == [
        {
            "command": "list",
            "instrument": code,
            "tick_fen": 10,
            "lot": 1,
            "min_qty": 1,
            "band_low_fen": 90_10,
            "band_high_fen": 110_00,
            "reference_price_fen": 100_05,
            "business_date": listed[0]["business_date"],
            "state": "trading",
        }
    ]
    updates = await outbox(factory, "instrument.updated", code)
    assert updates[-1] == instrument
    got = await client.get(f"/internal/instruments/{code}")
    assert got.json() == instrument


async def test_an_order_reserves_fills_into_obligations_releases_and_settles(
    client: httpx.AsyncClient, factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    code = await new_product(factory, settings)
    buyer = await new_member(factory, settings)
    seller = await new_member(factory, settings)
    await deposit(factory, buyer, 2000_00)
    await allocate(factory, code, seller, 100)
    day = past_date()

    buy, reason = await submit(factory, settings, buyer, code, "BUY", 100_00, 10)
    assert reason is None
    assert (await cash_fen(factory, buyer))["held"] == 1000_00 + 500
    sell, reason = await submit(factory, settings, seller, code, "SELL", 99_00, 10)
    assert reason is None
    assert (await units(factory, seller, code))["held"] == 10
    forwarded = await outbox(factory, "matching.shard.", buy)
    assert forwarded[0]["command"] == "new"
    assert forwarded[0]["price_fen"] == 100_00

    # 4 units trade at the resting sell's 99.00: the buyer's price improvement comes back
    trade = trade_event(1, buy, sell, buyer, seller, 99_00, 4, day)
    await book(factory, code, [trade])
    assert await cash_fen(factory, buyer) == {
        "settled": 2000_00,
        "held": 100_00 * 6 + 300,
        "pending_in": 0,
        "pending_out": 396_00 + 200,
        "available": 2000_00 - 603_00 - 398_00,
    }
    assert await units(factory, seller, code) == {
        "settled": 100,
        "held": 6,
        "pending_in": 0,
        "pending_out": 4,
        "available": 90,
    }
    assert (await cash_fen(factory, seller))["pending_in"] == 396_00 - 200
    assert (await units(factory, buyer, code))["pending_in"] == 4
    assert (await client.get(f"/internal/instruments/{code}")).json()["holder_count"] == 2
    # a redelivered trade (another message, same trade) changes nothing
    await book(factory, code, [trade])
    assert (await cash_fen(factory, buyer))["pending_out"] == 398_00

    await book(
        factory,
        code,
        [
            {
                "type": "OrderCancelled",
                "seq": 2,
                "order_id": buy,
                "reason": "USER",
                "filled_quantity": 4,
                "remaining_quantity": 6,
            },
            {
                "type": "OrderExpired",
                "seq": 3,
                "order_id": sell,
                "filled_quantity": 4,
                "remaining_quantity": 6,
            },
        ],
    )
    assert (await cash_fen(factory, buyer))["held"] == 0
    assert (await units(factory, seller, code))["held"] == 0
    await assert_ledger_ok(engine)

    batch = {
        "batch_id": new_id("b"),
        "business_date": day.isoformat(),
        "trades": [
            {
                "trade_id": trade["trade_id"],
                "instrument": code,
                "price_fen": 99_00,
                "quantity": 4,
                "buyer_member_id": buyer,
                "seller_member_id": seller,
                "buyer_fee_fen": 200,
                "seller_fee_fen": 200,
            }
        ],
    }
    wrong = {**batch, "trades": [{**batch["trades"][0], "seller_fee_fen": 0}]}
    refused = await client.post("/internal/settlement-batches", json=wrong)
    assert refused.status_code == 409
    assert refused.json()["code"] == "SETTLEMENT_MISMATCH"
    assert refused.json()["different"] == [trade["trade_id"]]
    applied = await client.post("/internal/settlement-batches", json=batch)
    assert applied.status_code == 201, applied.text
    result = applied.json()
    assert result["trade_count"] == 1
    assert result["totals"]["fee_total"] == "4.00"
    by_member = {m["member_id"]: m for m in result["members"]}
    assert by_member[buyer]["net_cash"] == "-396.00"
    assert by_member[buyer]["fees"] == "2.00"
    assert by_member[seller]["net_after_fees"] == "394.00"
    assert by_member[buyer]["units"] == [{"instrument": code, "net_units": 4}]
    assert await cash_fen(factory, buyer) == {
        "settled": 1602_00,
        "held": 0,
        "pending_in": 0,
        "pending_out": 0,
        "available": 1602_00,
    }
    assert await units(factory, buyer, code) == {
        "settled": 4,
        "held": 0,
        "pending_in": 0,
        "pending_out": 0,
        "available": 4,
    }
    assert (await cash_fen(factory, seller))["settled"] == 394_00
    assert (await units(factory, seller, code))["settled"] == 96

    repeat = await client.post("/internal/settlement-batches", json=batch)
    assert repeat.status_code == 200
    assert repeat.json() == result
    assert (await cash_fen(factory, buyer))["settled"] == 1602_00
    other_id = await client.post("/internal/settlement-batches", json={**batch, "batch_id": "x"})
    assert other_id.json()["code"] == "ALREADY_SETTLED"
    assert (await client.get(f"/internal/settlement-batches/{batch['batch_id']}")).json() == result

    page = await client.get(f"/internal/members/{buyer}/ledger?limit=2")
    items = page.json()["items"]
    assert [(i["kind"], i["amount"]) for i in items] == [("SETTLEMENT_UNITS", 4), ("FEE", "-2.00")]
    rest = await client.get(
        f"/internal/members/{buyer}/ledger?limit=10&cursor={page.json()['next_cursor']}"
    )
    assert [(i["kind"], i["amount"]) for i in rest.json()["items"]] == [
        ("TRADE_NET", "-396.00"),
        ("DEPOSIT", "2000.00"),
    ]
    assert rest.json()["next_cursor"] is None
    await assert_ledger_ok(engine)


async def test_pre_trade_checks_reject_with_the_public_reasons(
    factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    code = await new_product(factory, settings, risk_level="R4")
    capped = await new_product(factory, settings, max_holders=1)
    rich = await new_member(factory, settings)
    await deposit(factory, rich, 10_000_00)
    poor = await new_member(factory, settings)
    await deposit(factory, poor, 100_00)
    unqualified = await new_member(factory, settings, qualified=False)
    timid = await new_member(factory, settings, risk="C2")
    holder = await new_member(factory, settings)
    await allocate(factory, capped, holder, 10)

    async def reason(
        member: str, instrument: str, side: str, qty: int = 1, **kw: Any
    ) -> str | None:
        return (await submit(factory, settings, member, instrument, side, 100_00, qty, **kw))[1]

    assert await reason(poor, code, "BUY") == "INSUFFICIENT_FUNDS"  # 100.00 + 5.00 > 100.00
    assert await reason(rich, code, "SELL") == "INSUFFICIENT_UNITS"
    assert await reason(unqualified, code, "BUY") == "NOT_QUALIFIED"
    assert await reason(timid, code, "BUY") == "UNSUITABLE_RISK_LEVEL"
    assert await reason(rich, code, "BUY", partner="p_elsewhere") == "UNKNOWN_MEMBER"
    assert await reason(rich, capped, "BUY") == "HOLDER_LIMIT_REACHED"
    assert await reason(holder, capped, "SELL", qty=11) == "INSUFFICIENT_UNITS"
    rejected = await outbox(factory, "order.rejected", poor)
    assert rejected[-1]["reason"] == "INSUFFICIENT_FUNDS"
    async with unit_of_work(factory) as session:
        from services.custody import orders

        await orders.control(session, code, "halt", settings.matching_shards)
    assert await reason(rich, code, "BUY") == "INSTRUMENT_NOT_TRADING"
    halted = await outbox(factory, "matching.shard.", code)
    assert halted[-1] == {"command": "halt", "instrument": code}
    assert (await cash_fen(factory, rich))["held"] == 0
    await assert_ledger_ok(engine)


async def test_amend_and_a_book_rejection_release_what_is_no_longer_needed(
    factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    code = await new_product(factory, settings)
    buyer = await new_member(factory, settings)
    await deposit(factory, buyer, 5000_00)
    buy, _ = await submit(factory, settings, buyer, code, "BUY", 100_00, 10)
    await book(
        factory,
        code,
        [
            {
                "type": "OrderAmended",
                "seq": 1,
                "order_id": buy,
                "quantity": 6,
                "filled_quantity": 0,
                "remaining_quantity": 6,
                "released_quantity": 4,
            }
        ],
    )
    assert (await cash_fen(factory, buyer))["held"] == 600_00 + 500
    other, _ = await submit(factory, settings, buyer, code, "BUY", 100_00, 1)
    await book(
        factory,
        code,
        [
            {
                "type": "OrderRejected",
                "seq": 2,
                "order_id": other,
                "member_id": buyer,
                "reason": "PRICE_OUT_OF_BAND",
            }
        ],
    )
    assert (await cash_fen(factory, buyer))["held"] == 600_00 + 500
    told = await outbox(factory, "order.rejected", other)
    assert told == [
        {"order_id": other, "member_id": buyer, "instrument": code, "reason": "PRICE_OUT_OF_BAND"}
    ]
    await assert_ledger_ok(engine)


async def test_deposits_credit_once_and_withdrawals_reserve_post_and_complete(
    client: httpx.AsyncClient, factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    member = await new_member(factory, settings)
    reference = new_id("bk")
    body = {"member_id": member, "amount": "500.00", "bank_reference": reference}
    first = await client.post("/internal/deposits", json=body)
    again = await client.post("/internal/deposits", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    conflict = await client.post("/internal/deposits", json={**body, "amount": "1.00"})
    assert conflict.status_code == 409
    assert (await cash_fen(factory, member))["settled"] == 500_00

    too_much = await client.post(
        f"/internal/members/{member}/withdrawals", json={"amount": "500.01"}
    )
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "INSUFFICIENT_FUNDS"
    made = await client.post(f"/internal/members/{member}/withdrawals", json={"amount": "300.00"})
    assert made.status_code == 202
    withdrawal = made.json()
    assert withdrawal["status"] == "pending"
    assert withdrawal["amount"] == "300.00"
    assert (await cash_fen(factory, member))["available"] == 200_00
    hidden = await client.get(
        f"/internal/members/{member}/withdrawals/{withdrawal['withdrawal_id']}?partner_id=nope"
    )
    assert hidden.status_code == 404
    early = await client.post(f"/internal/withdrawals/{withdrawal['withdrawal_id']}/complete")
    assert early.status_code == 409

    # roll the day and settle it: the withdrawal leaves the member's account
    async with unit_of_work(factory) as session:
        day = await ledger.current_business_date(session)
        await ledger.set_business_date(session, day + timedelta(days=1))
    batch = {"batch_id": new_id("b"), "business_date": day.isoformat(), "trades": []}
    settled = await client.post("/internal/settlement-batches", json=batch)
    assert settled.status_code == 201, settled.text
    mine = [w for w in settled.json()["withdrawals"] if w["member_id"] == member]
    assert mine == [
        {
            "withdrawal_id": withdrawal["withdrawal_id"],
            "member_id": member,
            "sub_account": mine[0]["sub_account"],
            "amount": "300.00",
        }
    ]
    assert await cash_fen(factory, member) == {
        "settled": 200_00,
        "held": 0,
        "pending_in": 0,
        "pending_out": 0,
        "available": 200_00,
    }
    listed = await client.get(f"/internal/members/{member}/withdrawals")
    assert [w["status"] for w in listed.json()["items"]] == ["sent"]
    done = await client.post(f"/internal/withdrawals/{withdrawal['withdrawal_id']}/complete")
    assert done.json()["status"] == "completed"

    accounts = (await client.get(f"/internal/accounts?asset=CNY&as_of={day.isoformat()}")).json()
    row = next(a for a in accounts["items"] if a["member_id"] == member)
    assert row["settled"] == "200.00"
    before = (
        await client.get(
            f"/internal/accounts?asset=CNY&as_of={(day - timedelta(days=1)).isoformat()}"
        )
    ).json()
    assert next(a for a in before["items"] if a["member_id"] == member)["settled"] == "0.00"
    fee = [a for a in accounts["items"] if a["member_id"] == ""]
    assert fee[0]["sub_account"] == "SUBFEE0001"
    await assert_ledger_ok(engine)


async def test_primary_allocation_respects_issue_size_and_holder_cap(
    client: httpx.AsyncClient, factory: Factory, settings: CustodySettings
) -> None:
    code = await new_product(factory, settings, issue_size=100, max_holders=2)
    a, b, c = [await new_member(factory, settings) for _ in range(3)]
    url = f"/internal/instruments/{code}/allocations"
    too_many = await client.post(url, json={"allocations": [{"member_id": a, "quantity": 101}]})
    assert too_many.status_code == 422
    assert too_many.json()["code"] == "ALLOCATION_EXCEEDS_ISSUE"
    ok = await client.post(
        url,
        json={"allocations": [{"member_id": a, "quantity": 60}, {"member_id": b, "quantity": 40}]},
    )
    assert ok.status_code == 201
    assert ok.json()["holder_count"] == 2
    capped = await client.post(url, json={"allocations": [{"member_id": c, "quantity": 1}]})
    assert capped.json()["code"] in ("HOLDER_LIMIT_REACHED", "ALLOCATION_EXCEEDS_ISSUE")
    holders = (await client.get(f"/internal/instruments/{code}/holders")).json()
    assert [(h["member_id"], h["settled"]) for h in holders["items"]] == sorted([(a, 60), (b, 40)])
