"""Partner signatures, staff roles, cross-credential use, secrets at rest and the audit trail."""

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.gateway.conftest import Stack


async def test_a_correctly_signed_request_passes(stack: Stack) -> None:
    partner = await stack.new_partner()
    response = await partner.get("/v1/orders", params={"limit": 5})
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


async def test_missing_signature_headers_are_auth_missing(stack: Stack) -> None:
    partner = await stack.new_partner()
    assert (await stack.http.get("/v1/orders")).json()["code"] == "AUTH_MISSING"
    for absent in ("X-Api-Key", "X-Timestamp", "X-Signature"):
        headers = {"X-Api-Key": partner.creds.api_key, "X-Timestamp": "1", "X-Signature": "ab"}
        del headers[absent]
        response = await stack.http.get("/v1/orders", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_MISSING"
        assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_key_wrong_secret_and_tampering_are_rejected(stack: Stack) -> None:
    partner = await stack.new_partner()
    unknown = await partner.get("/v1/orders", api_key="pk_nobody")
    assert (unknown.status_code, unknown.json()["code"]) == (401, "AUTH_UNKNOWN_KEY")
    wrong = await partner.get("/v1/orders", secret="not-the-secret")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "AUTH_BAD_SIGNATURE")
    # Signed for one path, sent to another.
    ts = str(int(time.time() * 1000))
    from services.gateway.auth import signature

    headers = {
        "X-Api-Key": partner.creds.api_key,
        "X-Timestamp": ts,
        "X-Signature": signature(partner.creds.api_secret, ts, "GET", "/v1/orders", b""),
    }
    moved = await stack.http.get("/v1/trades", headers=headers)
    assert (moved.status_code, moved.json()["code"]) == (401, "AUTH_BAD_SIGNATURE")
    # Signed body A, sent body B.
    body_sig = signature(partner.creds.api_secret, ts, "POST", "/v1/webhooks", b'{"a":1}')
    tampered = await stack.http.post(
        "/v1/webhooks", content=b'{"a":2}', headers={**headers, "X-Signature": body_sig}
    )
    assert (tampered.status_code, tampered.json()["code"]) == (401, "AUTH_BAD_SIGNATURE")


async def test_stale_and_future_timestamps_and_replays_after_the_window(stack: Stack) -> None:
    partner = await stack.new_partner()
    now = int(time.time() * 1000)
    for ts in (now - 31_000, now + 31_000, 0):
        response = await partner.get("/v1/orders", timestamp_ms=ts)
        assert (response.status_code, response.json()["code"]) == (401, "AUTH_STALE_TIMESTAMP")
    assert (await partner.get("/v1/orders", timestamp_ms=now - 20_000)).status_code == 200
    # A captured request replayed after the window: the exact same headers, 31 s old.
    old = now - 31_000
    from services.gateway.auth import signature

    captured = {
        "X-Api-Key": partner.creds.api_key,
        "X-Timestamp": str(old),
        "X-Signature": signature(partner.creds.api_secret, str(old), "GET", "/v1/orders", b""),
    }
    replay = await stack.http.get("/v1/orders", headers=captured)
    assert (replay.status_code, replay.json()["code"]) == (401, "AUTH_STALE_TIMESTAMP")
    garbage = await partner.get("/v1/orders", headers={"X-Timestamp": "yesterday"})
    assert garbage.status_code == 401


async def test_staff_tokens_and_roles(stack: Stack) -> None:
    missing = await stack.http.post("/v1/admin/partners", json={"name": "x"})
    assert (missing.status_code, missing.json()["code"]) == (401, "AUTH_MISSING")
    unknown = await stack.http.post(
        "/v1/admin/partners", json={"name": "x"}, headers={"Authorization": "Bearer nope"}
    )
    assert (unknown.status_code, unknown.json()["code"]) == (401, "AUTH_INVALID_TOKEN")
    operator = await stack.staff_headers("operator")
    auditor = await stack.staff_headers("auditor")
    for headers in (operator, auditor):
        forbidden = await stack.http.post("/v1/admin/partners", json={"name": "x"}, headers=headers)
        assert (forbidden.status_code, forbidden.json()["code"]) == (403, "FORBIDDEN_ROLE")
        staff = await stack.http.post(
            "/v1/admin/staff-tokens", json={"role": "admin", "name": "x"}, headers=headers
        )
        assert staff.status_code == 403
    body = {"member_id": "m_x", "amount": "1.00", "bank_reference": "BK-x"}
    assert (
        await stack.http.post("/v1/admin/deposits", json=body, headers=auditor)
    ).status_code == 403
    assert (await stack.http.get("/v1/admin/business-date", headers=auditor)).status_code == 200
    assert (await stack.http.get("/v1/admin/business-date", headers=operator)).status_code == 200
    assert (await stack.http.get("/v1/admin/audit", headers=auditor)).status_code == 200


async def test_credentials_of_the_other_kind_are_401(stack: Stack) -> None:
    partner = await stack.new_partner()
    on_staff = await partner.get("/v1/admin/business-date")
    assert on_staff.status_code == 401
    on_admin = await partner.post("/v1/admin/partners", {"name": "x"})
    assert on_admin.status_code == 401
    on_partner = await stack.http.get("/v1/orders", headers=stack.admin_headers)
    assert on_partner.status_code == 401
    operator = await stack.staff_headers("operator")
    assert (await stack.http.get("/v1/trades", headers=operator)).status_code == 401
    # Reference data takes either.
    assert (await partner.get("/v1/instruments")).status_code == 200
    assert (await stack.http.get("/v1/instruments", headers=operator)).status_code == 200


async def test_a_database_dump_holds_no_working_credentials(
    stack: Stack, engine: AsyncEngine
) -> None:
    partner = await stack.new_partner()
    token_headers = await stack.staff_headers("auditor")
    token = token_headers["Authorization"].split()[1]
    async with engine.connect() as conn:
        rows = []
        for table in ("partners", "staff_tokens", "audit_log", "idempotency_keys"):
            rows += (await conn.execute(text(f"SELECT * FROM gateway.{table}"))).all()
    dump = " ".join(str(row) for row in rows)
    assert partner.creds.api_secret not in dump
    assert partner.creds.api_secret.encode().hex() not in dump
    assert token not in dump
    assert stack.settings.admin_token not in dump


async def test_staff_actions_are_in_the_audit_trail(stack: Stack) -> None:
    operator = await stack.staff_headers("operator")
    since = (await stack.http.get("/healthz")).headers.get("date")
    assert since is not None
    await stack.http.post("/v1/admin/eod", json={"business_date": "2026-11-20"}, headers=operator)
    denied = await stack.http.post("/v1/admin/partners", json={"name": "x"}, headers=operator)
    assert denied.status_code == 403
    page = await stack.http.get(
        "/v1/admin/audit", params={"since": "2000-01-01T00:00:00Z", "limit": 1000}, headers=operator
    )
    assert page.status_code == 200, page.text
    entries = page.json()["items"]
    mine = [
        e
        for e in entries
        if e["role"] == "operator" and e["path"] in ("/v1/admin/eod", "/v1/admin/partners")
    ]
    assert {(e["path"], e["status"]) for e in mine} >= {
        ("/v1/admin/eod", 202),
        ("/v1/admin/partners", 403),
    }
    eod = next(e for e in mine if e["path"] == "/v1/admin/eod")
    assert eod["request"] == {"business_date": "2026-11-20"}


async def test_every_answer_carries_a_correlation_id(stack: Stack) -> None:
    partner = await stack.new_partner()
    rejected = await stack.http.get("/v1/orders")
    assert rejected.headers["X-Correlation-Id"].startswith("c_")
    mine = await partner.get("/v1/orders", headers={"X-Correlation-Id": "trace-123"})
    assert mine.headers["X-Correlation-Id"] == "trace-123"
    key = {"Idempotency-Key": "corr-" + partner.creds.partner_id, "X-Correlation-Id": "trace-9"}
    body = {"url": "https://partner.example/cb", "events": ["order.updated"]}
    await partner.post("/v1/webhooks", body, headers=key)
    replay = await partner.post("/v1/webhooks", body, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["X-Correlation-Id"] == "trace-9"
