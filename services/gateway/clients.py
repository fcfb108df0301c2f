"""The gateway's HTTP clients of custody, matching and clearing: the only module that
knows their internal routes.

Internal routes answer with the public API's JSON shapes, so the gateway passes bodies
through: a downstream problem document reaches the caller unchanged (status, code and
all), and a downstream that cannot be reached, times out or fails with a 5xx becomes
``503 SERVICE_UNAVAILABLE``.
"""

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from fastapi import Response

from shared.errors import PROBLEM_CONTENT_TYPE, ProblemError

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | None]


class DownstreamProblem(ProblemError):
    """A problem document from a downstream service, passed through verbatim."""

    def __init__(self, status: int, document: dict[str, Any]) -> None:
        super().__init__(
            status,
            str(document.get("code") or "DOWNSTREAM_ERROR"),
            str(document.get("detail") or ""),
        )
        self.document = document

    def to_dict(self) -> dict[str, Any]:
        return self.document


def unavailable(service: str, detail: str) -> ProblemError:
    return ProblemError(
        503,
        "SERVICE_UNAVAILABLE",
        f"{service} is unavailable: {detail}",
        headers={"Retry-After": "1"},
    )


class ServiceClient:
    """One downstream service, reached over HTTP on its internal routes."""

    def __init__(self, service: str, base_url: str, *, timeout: float) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """The downstream's 2xx answer; raises its problem (4xx) or 503 (anything else)."""
        headers: dict[str, str] = {}
        body: bytes | None = content
        if json is not None:
            body = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        elif content_type is not None:
            headers["Content-Type"] = content_type
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(
                method, path, params=clean, content=body, headers=headers
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning(
                "downstream unreachable",
                extra={"service": self.service, "path": path, "error": repr(exc)},
            )
            raise unavailable(self.service, type(exc).__name__) from exc
        if response.status_code < 400:
            return response
        if response.status_code >= 500:
            raise unavailable(self.service, f"answered {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            document = None
        if isinstance(document, dict) and "code" in document:
            document.setdefault("status", response.status_code)
            raise DownstreamProblem(response.status_code, document)
        raise DownstreamProblem(
            response.status_code,
            {
                "type": "about:blank",
                "title": response.reason_phrase,
                "status": response.status_code,
                "code": "DOWNSTREAM_ERROR",
                "detail": f"{self.service} answered {response.status_code}",
            },
        )

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise unavailable(self.service, "answered with a body that is not JSON") from exc

    async def proxy(self, method: str, path: str, **kwargs: Any) -> Response:
        """Pass the downstream's answer through: its status, body and content type."""
        response = await self.call(method, path, **kwargs)
        media_type = response.headers.get("content-type", "application/json")
        return Response(
            content=response.content, status_code=response.status_code, media_type=media_type
        )


class Downstream:
    """Custody, matching and clearing."""

    def __init__(self, custody: str, matching: str, clearing: str, *, timeout: float) -> None:
        self.custody = ServiceClient("custody", custody, timeout=timeout)
        self.matching = ServiceClient("matching", matching, timeout=timeout)
        self.clearing = ServiceClient("clearing", clearing, timeout=timeout)

    async def close(self) -> None:
        for client in (self.custody, self.matching, self.clearing):
            await client.close()


__all__ = ["PROBLEM_CONTENT_TYPE", "Downstream", "DownstreamProblem", "ServiceClient"]
