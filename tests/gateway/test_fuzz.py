"""Schemathesis against the gateway's own OpenAPI document, every operation, bounded:
no answer is a 5xx of the gateway's making, and a rejected request changes nothing.

Hypothesis runs in a worker thread (the servers live in this event loop) and signs each
generated request like a partner, or sends the admin token on staff routes."""

import asyncio
import time
from collections import Counter
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.auth import signature
from tests.gateway.conftest import Stack
from tests.gateway.support import PartnerApi

EXAMPLES_PER_OPERATION = 15
STATE_TABLES = ("orders", "partners", "staff_tokens", "webhooks", "outbox", "trades")


class Signer(requests.auth.AuthBase):
    def __init__(self, partner: PartnerApi, admin_token: str) -> None:
        self.partner = partner
        self.admin_token = admin_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path = request.path_url
        if path.startswith("/v1/admin/"):
            request.headers["Authorization"] = f"Bearer {self.admin_token}"
            return request
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        ts = str(int(time.time() * 1000))
        request.headers["X-Api-Key"] = self.partner.creds.api_key
        request.headers["X-Timestamp"] = ts
        request.headers["X-Signature"] = signature(
            self.partner.creds.api_secret, ts, request.method or "GET", path, bytes(body)
        )
        return request


async def test_fuzz_every_operation(stack: Stack, engine: AsyncEngine) -> None:
    spec = (await stack.http.get("/openapi.json")).json()
    partner = await stack.new_partner(rate_limit_per_second=100000, rate_limit_burst=100000)
    loop = asyncio.get_running_loop()

    async def counts() -> dict[str, int]:
        async with engine.connect() as conn:
            found = {}
            for table in STATE_TABLES:
                found[table] = (
                    await conn.execute(text(f"SELECT count(*) FROM gateway.{table}"))
                ).scalar_one()
            return found

    def state() -> dict[str, int]:
        return asyncio.run_coroutine_threadsafe(counts(), loop).result(30)

    failures: list[str] = []
    statuses: Counter[int] = Counter()

    # Load the schema and build every strategy here, in the main thread: schemathesis imports
    # modules lazily, and pytest's assertion rewriting of an import inside the worker thread
    # trips a CPython 3.11 bug ("AST constructor recursion depth mismatch").
    schema = schemathesis.openapi.from_dict(spec)
    strategies = [
        operation.as_strategy()
        for operation in (result.ok() for result in schema.get_all_operations())
        if operation.path not in ("/metrics",)
    ]

    def run() -> int:
        session = requests.Session()
        session.auth = Signer(partner, stack.settings.admin_token)
        calls = 0
        for strategy in strategies:

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy)
            def check(case: Any) -> None:
                nonlocal calls
                before = state()
                response = case.call(base_url=stack.url, session=session, timeout=30)
                calls += 1
                status = response.status_code
                statuses[status] += 1
                label = f"{case.method} {case.formatted_path} -> {status} {response.text[:200]} {case.body!r:.300} {case.headers!r:.300}"
                if status >= 500 and not (
                    status == 503 and response.json().get("code") == "SERVICE_UNAVAILABLE"
                ):
                    failures.append(label)
                if status >= 400 and state() != before:
                    failures.append(f"rejected but changed state: {label}")

            check()
        return calls

    calls = await asyncio.to_thread(run)
    assert calls > 200
    assert sum(n for s, n in statuses.items() if s < 300) > 50, statuses
    assert not failures, "\n".join(failures[:20])
