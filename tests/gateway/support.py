"""Helpers for the gateway tests: real HTTP servers in the test's event loop and
clients that sign like a partner platform."""

import asyncio
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import uvicorn
from starlette.types import ASGIApp

from services.gateway.auth import signature
from tests.support.wait import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """An ASGI app served by uvicorn on a free loopback port, in this event loop."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="on",
                ws="websockets-sansio",
                access_log=False,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        server = self._server

        async def started() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            return bool(server.started)

        await wait_until(started, timeout=30, message=f"server on {self.port}")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def unique_code(prefix: str = "T") -> str:
    return (prefix + secrets.token_hex(5)).upper()[:12]


@dataclass
class PartnerCreds:
    partner_id: str
    api_key: str
    api_secret: str


class PartnerApi:
    """Signs every request as docs/spec/api.md says."""

    def __init__(self, http: httpx.AsyncClient, creds: PartnerCreds) -> None:
        self.http = http
        self.creds = creds

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        secret: str | None = None,
        api_key: str | None = None,
    ) -> httpx.Response:
        target = path + ("?" + urlencode(params) if params else "")
        body = b"" if json is None else orjson.dumps(json)
        ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
        signed = {
            "X-Api-Key": api_key or self.creds.api_key,
            "X-Timestamp": ts,
            "X-Signature": signature(secret or self.creds.api_secret, ts, method, target, body),
            "Content-Type": "application/json",
            **(headers or {}),
        }
        return await self.http.request(method, target, content=body, headers=signed)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", path, json=json, **kw)


def instrument_body(code: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": f"Test product {code}",
        "issuer": "Test Issuer Co.",
        "product_type": "income_right_transfer",
        "face_value": "100.00",
        "issue_size": 100000,
        "expected_yield": "0.065",
        "term_days": 365,
        "maturity_date": "2027-11-20",
        "risk_level": "R3",
        "tick_size": "0.05",
        "lot_size": 10,
        "min_order_qty": 20,
        "min_order_value": "2500.00",
        "price_band_pct": "10",
        "reference_price": "100.00",
        "max_holders": 200,
        "transferable": True,
        "disclosure": {"underlying_assets": "receivables"},
    }
    body.update(overrides)
    return body
