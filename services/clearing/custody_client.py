"""Clearing's calls to custody's internal routes."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import orjson

from shared.errors import ProblemError


class CustodyRefused(Exception):
    """Custody answered a problem document."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('code')}: {body.get('detail')}")
        self.status = status
        self.code = str(body.get("code", ""))
        self.body = body


class CustodyClient:
    def __init__(self, base_url: str, timeout: float) -> None:
        self._base_url = base_url
        self._timeout = timeout

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        async with httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout) as client:
            try:
                response = await client.request(method, path, json=json, params=params)
            except httpx.HTTPError as exc:
                raise ProblemError(
                    503, "CUSTODY_UNAVAILABLE", f"custody did not answer: {exc!r}"
                ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"code": "HTTP_ERROR", "detail": response.text[:500]}
            raise CustodyRefused(response.status_code, body)
        return orjson.loads(response.content)

    async def instruments(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/internal/instruments"))["items"])

    async def listings(self) -> dict[str, date]:
        """Each product's listing business date (a book listed after a roll never rolls it)."""
        items = (await self._call("GET", "/internal/clearing/listings"))["items"]
        return {i["instrument"]: date.fromisoformat(i["listed_on"]) for i in items}

    async def settle(self, batch: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", "/internal/settlement-batches", json=batch))

    async def settle_netted(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The day as clearing netted it (custody checks it against its own obligations)."""
        return dict(await self._call("POST", "/internal/clearing/settlement-batches", json=batch))

    async def accounts(self, as_of: date) -> list[dict[str, Any]]:
        answer = await self._call(
            "GET", "/internal/accounts", params={"asset": "CNY", "as_of": as_of.isoformat()}
        )
        return list(answer["items"])

    async def cash_movements(self, business_date: date) -> list[dict[str, Any]]:
        answer = await self._call(
            "GET",
            "/internal/clearing/cash-movements",
            params={"business_date": business_date.isoformat()},
        )
        return list(answer["items"])

    async def complete_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/internal/withdrawals/{withdrawal_id}/complete"))
