"""Async clients of the public REST API, signing as a partner or carrying a staff token."""

from typing import Any

import httpx
import orjson

from exchange_cli.api_client import signed_headers


class Partner:
    def __init__(self, base_url: str, api_key: str, api_secret: str) -> None:
        self.api_key, self._secret = api_key, api_secret
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        raw = b"" if body is None else orjson.dumps(body)
        signed = {
            **signed_headers(self.api_key, self._secret, method, path, raw),
            **(headers or {}),
        }
        return await self.http.request(method, path, content=raw or None, headers=signed)

    async def aclose(self) -> None:
        await self.http.aclose()


class Staff:
    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    async def request(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.http.request(method, path, json=body, **kwargs)

    async def aclose(self) -> None:
        await self.http.aclose()
