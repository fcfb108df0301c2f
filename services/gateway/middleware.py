"""The edge every ``/v1`` HTTP request passes: authentication, the per-key rate limit,
idempotency keys, and the audit trail of staff actions (pure ASGI, so the request body
is read once and both signed and replayed byte for byte)."""

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.auth import PRINCIPAL_KEY, PartnerPrincipal, Principal, StaffPrincipal
from services.gateway.idempotency import MAX_KEY_LENGTH, request_hash, should_record
from services.gateway.order_entry_path import OrderEntryPath
from services.gateway.repositories import insert_audit
from shared.errors import ProblemError
from shared.ids import new_id
from shared.logging import correlation_id_var

if TYPE_CHECKING:
    from services.gateway.context import Gateway

log = logging.getLogger(__name__)

AUDIT_BODY_LIMIT = 8192
#: The largest request body accepted (a batch of 100 orders is about 25 KB; bank statements
#: for reconciliation are the big ones).
MAX_BODY = 16 * 1024 * 1024


def path_with_query(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


def header_map(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    return headers


async def send_problem(
    send: Send, error: ProblemError, extra: dict[str, str] | None = None
) -> None:
    body = orjson.dumps(error.to_dict())
    headers = {**error.headers, **(extra or {})}
    await send_raw(send, error.status, "application/problem+json", body, headers)


async def send_raw(
    send: Send, status: int, content_type: str | None, body: bytes, headers: dict[str, str]
) -> None:
    raw = [(b"content-length", str(len(body)).encode())]
    if content_type:
        raw.append((b"content-type", content_type.encode("latin-1")))
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _Recorder:
    """Forwards the response while keeping its status, content type and body."""

    def __init__(self, send: Send, extra_headers: dict[str, str], *, hold: bool = False) -> None:
        self._send = send
        self._hold = hold
        self._held: list[Message] = []
        self._extra = [(k.lower().encode(), v.encode()) for k, v in extra_headers.items()]
        self.status = 500
        self.content_type: str | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = list(message.get("headers", []))
            for name, value in headers:
                if name.lower() == b"content-type":
                    self.content_type = value.decode("latin-1")
            message = {**message, "headers": headers + self._extra}
        elif message["type"] == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))
        if self._hold:
            self._held.append(message)
        else:
            await self._send(message)

    async def flush(self) -> None:
        held, self._held = self._held, []
        for message in held:
            await self._send(message)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, gateway: "Gateway") -> None:
        self.app = app
        self.gateway = gateway
        self.order_entry = OrderEntryPath(gateway, app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = header_map(scope)
        try:
            body, receive = await _buffer(receive)
        except _TooLarge:
            await send_problem(
                send,
                ProblemError(
                    413, "PAYLOAD_TOO_LARGE", f"request bodies are limited to {MAX_BODY} bytes"
                ),
            )
            return
        correlation_id = headers.get("x-correlation-id")
        if not correlation_id:
            # Chosen here so the answers this layer gives itself carry it too.
            correlation_id = new_id("c")
            scope["headers"] = [*scope["headers"], (b"x-correlation-id", correlation_id.encode())]
        own = {"X-Correlation-Id": correlation_id[:128]}
        method = str(scope["method"]).upper()
        target = path_with_query(scope)
        gw = self.gateway
        try:
            principal = await gw.auth.authenticate(method, target, headers, body)
        except ProblemError as error:
            await send_problem(send, error, own)
            return
        extra: dict[str, str] = {}
        if isinstance(principal, PartnerPrincipal):
            decision = gw.limiter.take(
                principal.api_key,
                principal.rate_per_second or gw.settings.rate_limit_per_second,
                principal.rate_burst or gw.settings.rate_limit_burst,
            )
            extra = decision.headers()
            if not decision.allowed:
                await send_problem(
                    send,
                    ProblemError(429, "RATE_LIMITED", "too many requests for this API key"),
                    {**extra, **own},
                )
                return
        scope[PRINCIPAL_KEY] = principal
        audited = isinstance(principal, StaffPrincipal) and method != "GET"
        # A staff action's answer waits for its audit row, so the trail is never behind.
        recorder = _Recorder(send, extra, hold=audited)
        key = headers.get("idempotency-key")
        if method == "POST" and key is not None and principal is not None:
            await self._idempotent(
                scope, receive, recorder, principal, key, target, headers, body, own
            )
        else:
            await self._forward(scope, receive, recorder, headers, body)
        if audited:
            assert isinstance(principal, StaffPrincipal)
            await self._audit(principal, method, target, recorder.status, headers, body)
            await recorder.flush()

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        recorder: "_Recorder",
        principal: Principal,
        key: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        own: dict[str, str],
    ) -> None:
        """Run the request at most once per key (the recorder adds the rate-limit headers)."""
        if not key or len(key) > MAX_KEY_LENGTH:
            error = ProblemError(
                422,
                "VALIDATION_FAILED",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            )
            await send_problem(recorder, error, own)
            return
        store = self.gateway.idempotency
        outcome = await store.claim(principal.scope, key, request_hash("POST", target, body))
        if outcome.kind == "conflict":
            error = ProblemError(
                422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with another request"
            )
            await send_problem(recorder, error, own)
            return
        if outcome.kind == "busy":
            error = ProblemError(
                409,
                "IDEMPOTENCY_KEY_IN_USE",
                "a request with this Idempotency-Key is still being processed; retry later",
                headers={"Retry-After": "1"},
            )
            await send_problem(recorder, error, own)
            return
        if outcome.kind == "replay":
            await send_raw(
                recorder,
                outcome.status,
                outcome.content_type,
                outcome.body,
                {**own, "Idempotent-Replayed": "true"},
            )
            return
        # Only the real caller's answer counts: a cancelled or failed request frees the key.
        try:
            scope["gateway.idempotency_key"] = f"{principal.scope}:{key}"
            await self._forward(scope, receive, recorder, headers, body)
        except BaseException:
            await store.release(principal.scope, key)
            raise
        if should_record(recorder.status):
            await store.complete(
                principal.scope, key, recorder.status, recorder.content_type, recorder.body
            )
        else:
            await store.release(principal.scope, key)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], body: bytes
    ) -> None:
        if self.order_entry.takes(scope, headers):
            await self.order_entry(scope, receive, send, body)
        else:
            await self.app(scope, receive, send)

    async def _audit(
        self,
        staff: StaffPrincipal,
        method: str,
        target: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        request: Any = None
        if body and len(body) <= AUDIT_BODY_LIMIT and "json" in headers.get("content-type", "json"):
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                request = None
            if b"\\u0000" in body or b"\x00" in body:
                request = {"note": "body not kept: it contains NUL characters"}
        try:
            async with self.gateway.sessions()() as session, session.begin():
                await insert_audit(
                    session,
                    actor=staff.token_id,
                    actor_name=staff.name,
                    role=staff.role,
                    method=method,
                    path=target,
                    status=status,
                    request=request,
                    correlation_id=correlation_id_var.get() or headers.get("x-correlation-id"),
                )
        except Exception:
            log.exception("could not write the audit trail", extra={"path": target})


class _TooLarge(Exception):
    pass


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    delivered = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
