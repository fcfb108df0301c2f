"""Thin proxies to custody, matching and clearing: shapes and problems pass through,
tenancy is added, an unavailable service is 503 SERVICE_UNAVAILABLE."""

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import ProblemError
from tests.gateway.conftest import Stack


async def test_members_and_accounts_pass_through_with_the_partner(stack: Stack) -> None:
    partner = await stack.new_partner()
    body = {
        "external_ref": "dup-ref",
        "name": "Han Meimei",
        "kind": "institution",
        "qualified": True,
        "risk_tolerance": "C3",
    }
    created = await partner.post("/v1/members", body)
    assert created.status_code == 201
    member = created.json()
    assert member["sub_account"].startswith("SUB")
    again = await partner.post("/v1/members", body)
    assert (again.status_code, again.json()["code"]) == (409, "MEMBER_EXISTS")
    mid = member["member_id"]
    assert (await partner.get(f"/v1/members/{mid}")).json() == member
    balances = await partner.get(f"/v1/members/{mid}/balances")
    assert balances.json()["cash"]["available"] == "0.00"
    assert (await partner.get(f"/v1/members/{mid}/ledger", params={"limit": 5})).status_code == 200
    withdrawal = await partner.post(f"/v1/members/{mid}/withdrawals", {"amount": "300.00"})
    assert withdrawal.status_code == 202
    assert withdrawal.json()["status"] == "pending"
    wid = withdrawal.json()["withdrawal_id"]
    listed = await partner.get(f"/v1/members/{mid}/withdrawals")
    assert [w["withdrawal_id"] for w in listed.json()["items"]] == [wid]
    too_much = await partner.post(f"/v1/members/{mid}/withdrawals", {"amount": "999999.00"})
    assert (too_much.status_code, too_much.json()["code"]) == (422, "INSUFFICIENT_FUNDS")
    floats = await partner.post(f"/v1/members/{mid}/withdrawals", {"amount": 3.0})
    assert floats.status_code == 422
    statements = await partner.get(
        f"/v1/members/{mid}/settlements", params={"business_date": "2026-11-20"}
    )
    assert statements.status_code == 200
    calls = [c for c in stack.custody.calls if c[1].startswith(f"/internal/members/{mid}/")]
    assert all(c[2].get("partner_id") == partner.creds.partner_id for c in calls)
    # Statements are clearing's; custody only confirmed the member is this partner's.
    assert stack.clearing.statement_queries[-1]["member_id"] == mid
    assert stack.clearing.statement_queries[-1]["business_date"] == "2026-11-20"


async def test_a_downstream_that_fails_is_503(stack: Stack) -> None:
    partner = await stack.new_partner()
    for failure in (500, 502):
        stack.custody.fail_with = failure
        try:
            response = await partner.get("/v1/instruments")
        finally:
            stack.custody.fail_with = None
        assert (response.status_code, response.json()["code"]) == (503, "SERVICE_UNAVAILABLE")
    # Unreachable: a port nobody listens on.
    from services.gateway.clients import ServiceClient
    from tests.gateway.support import free_port

    client = ServiceClient("custody", f"http://127.0.0.1:{free_port()}", timeout=1)
    try:
        with pytest.raises(ProblemError) as raised:
            await client.call("GET", "/internal/instruments")
        assert (raised.value.status, raised.value.code) == (503, "SERVICE_UNAVAILABLE")
    finally:
        await client.close()


async def test_instrument_admin_and_reference_data(stack: Stack, engine: AsyncEngine) -> None:
    partner = await stack.new_partner()
    code = await stack.new_instrument()
    listed = (await partner.get("/v1/instruments")).json()["items"]
    assert code in {i["code"] for i in listed}
    one = (await partner.get(f"/v1/instruments/{code}")).json()
    assert one["state"] == "trading"
    assert one["holder_count"] == 0
    assert (await partner.get("/v1/instruments/NOPE0000")).json()["code"] == "UNKNOWN_INSTRUMENT"
    dup = await stack.http.post(
        "/v1/admin/instruments",
        json={**stack.custody.instruments[code], "state": None},
        headers=stack.admin_headers,
    )
    assert (dup.status_code, dup.json()["code"]) == (409, "INSTRUMENT_EXISTS")
    bad = await stack.http.post(
        "/v1/admin/instruments", json={"code": "lower"}, headers=stack.admin_headers
    )
    assert bad.status_code == 422
    member = await stack.new_member(partner)
    allocation = await stack.http.post(
        f"/v1/admin/instruments/{code}/allocations",
        json={"allocations": [{"member_id": member, "quantity": 500}]},
        headers=stack.admin_headers,
    )
    assert allocation.status_code == 201, allocation.text
    halted = await stack.http.post(
        f"/v1/admin/instruments/{code}/halt", headers=stack.admin_headers
    )
    assert halted.status_code == 200
    assert halted.json()["state"] == "halted"
    assert halted.json()["code"] == code
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT body FROM gateway.outbox WHERE routing_key = 'instrument.control'")
            )
        ).all()
    payloads = [orjson.loads(bytes(r.body))["payload"] for r in rows]
    assert {"instrument": code, "action": "halt"} in payloads
    stack.custody.instruments[code]["state"] = "delisted"
    refused = await stack.http.post(
        f"/v1/admin/instruments/{code}/resume", headers=stack.admin_headers
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "INSTRUMENT_DELISTED")
    operator = await stack.staff_headers("operator")
    assert (
        await stack.http.post(f"/v1/admin/instruments/{code}/halt", headers=operator)
    ).status_code == 403


async def test_market_data_and_clearing(stack: Stack) -> None:
    partner = await stack.new_partner()
    depth = await partner.get("/v1/market/ABCD1234/depth", params={"levels": 5})
    assert depth.json() == {
        "instrument": "ABCD1234",
        "sequence": 7,
        "bids": [["100.00", 5]],
        "asks": [["101.00", 3]],
    }
    assert (await partner.get("/v1/market/ABCD1234/trades")).json()["items"][0]["sequence"] == 3
    ticker = (await partner.get("/v1/market/ABCD1234/ticker")).json()
    assert ticker["turnover"] == "0.00"
    assert ticker["last"] is None
    operator = await stack.staff_headers("operator")
    auditor = await stack.staff_headers("auditor")
    date = (await stack.http.get("/v1/admin/business-date", headers=auditor)).json()
    assert date["business_date"] == stack.clearing.business_date
    eod = await stack.http.post(
        "/v1/admin/eod", json={"business_date": "2026-11-20"}, headers=operator
    )
    assert eod.status_code == 202
    assert eod.json()["status"] == "running"
    missing = await stack.http.get("/v1/admin/eod/2001-01-01", headers=auditor)
    assert (missing.status_code, missing.json()["code"]) == (404, "EOD_NOT_FOUND")
    csv = await stack.http.get("/v1/admin/settlements/2026-11-20/instructions", headers=auditor)
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.startswith("business_date,seq")
    statement = b"record_type,business_date\nB,2026-11-20\n"
    loaded = await stack.http.post(
        "/v1/admin/reconciliations/2026-11-20",
        content=statement,
        headers={**operator, "Content-Type": "text/csv"},
    )
    assert loaded.status_code == 201, loaded.text
    assert stack.clearing.statements["2026-11-20"] == statement
    member = await stack.new_member(partner)
    deposit = {"member_id": member, "amount": "5000.00", "bank_reference": f"BK-{member}"}
    assert (
        await stack.http.post("/v1/admin/deposits", json=deposit, headers=operator)
    ).status_code == 201
    accounts = await stack.http.get(
        "/v1/admin/accounts", params={"asset": "CNY", "as_of": "2026-11-20"}, headers=auditor
    )
    assert accounts.status_code == 200
    assert any(a["member_id"] == member for a in accounts.json()["items"])
    assert stack.custody.calls[-1][2] == {"asset": "CNY", "as_of": "2026-11-20", "limit": "100"}
