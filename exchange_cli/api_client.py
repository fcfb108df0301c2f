"""A small client of the public REST API, as a partner platform or staff would use it.

Written from the contract (docs/spec/api.md), not from the gateway's code, so that it also
checks the contract from the outside.
"""

import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson


def sign(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    message = "\n".join(
        [timestamp, method.upper(), path_with_query, hashlib.sha256(body).hexdigest()]
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    api_key: str, secret: str, method: str, path_with_query: str, body: bytes
) -> dict[str, str]:
    """The headers that authenticate one partner request, signed now."""
    timestamp = str(int(time.time() * 1000))
    return {
        "X-Api-Key": api_key,
        "X-Timestamp": timestamp,
        "X-Signature": sign(secret, timestamp, method, path_with_query, body),
        "Content-Type": "application/json",
    }


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            self.problem: dict[str, Any] = response.json()
        except ValueError:
            self.problem = {"detail": response.text}
        self.code = str(self.problem.get("code", ""))
        super().__init__(
            f"{response.request.method} {response.request.url.path}: {self.status} {self.problem}"
        )


class PartnerClient:
    """Signs every request with the partner's API key and secret."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout: float = 15.0) -> None:
        self.api_key = api_key
        self._secret = api_secret
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> httpx.Response:
        raw = b"" if body is None else orjson.dumps(body)
        headers = signed_headers(self.api_key, self._secret, method, path, raw)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._http.request(method, path, content=raw or None, headers=headers)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request(method, path, body, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json()

    def close(self) -> None:
        self._http.close()


class StaffClient:
    def __init__(self, base_url: str, token: str, timeout: float = 15.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def request(
        self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._http.request(method, path, json=body, headers=headers)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request(method, path, body, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json()

    def close(self) -> None:
        self._http.close()
