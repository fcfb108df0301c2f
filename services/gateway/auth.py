"""Who is calling: partners by HMAC signature, staff by bearer token.

The middleware authenticates whatever credentials a request carries and leaves the
principal in the ASGI scope; route dependencies then demand a partner or a staff member
with a given role. Partner credentials on a staff route, or a staff token on a partner
route, are ``401``.
"""

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.models import partners, staff_tokens
from services.gateway.secrets_box import SecretBox, SecretBoxError, hash_token
from services.gateway.settings import GatewaySettings
from shared.errors import ProblemError

log = logging.getLogger(__name__)

Role = Literal["operator", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("operator", "auditor", "admin")
PRINCIPAL_KEY = "gateway.principal"
BOOTSTRAP_ADMIN_ID = "bootstrap-admin"


@dataclass(frozen=True, slots=True)
class PartnerPrincipal:
    partner_id: str
    name: str
    api_key: str
    secret: str
    rate_per_second: int | None
    rate_burst: int | None

    @property
    def scope(self) -> str:
        return f"partner:{self.partner_id}"


@dataclass(frozen=True, slots=True)
class StaffPrincipal:
    token_id: str
    name: str
    role: Role

    @property
    def scope(self) -> str:
        return f"staff:{self.token_id}"


Principal = PartnerPrincipal | StaffPrincipal


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signature(secret: str, timestamp: str, method: str, path_with_query: str, body: bytes) -> str:
    """hex(HMAC-SHA256(secret, ts + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + hex(sha256(body))))."""
    message = "\n".join((timestamp, method.upper(), path_with_query, body_digest(body)))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    api_key: str, secret: str, method: str, path_with_query: str, body: bytes = b""
) -> dict[str, str]:
    """The three headers a partner sends (also used to sign webhooks)."""
    ts = str(int(time.time() * 1000))
    return {
        "X-Api-Key": api_key,
        "X-Timestamp": ts,
        "X-Signature": signature(secret, ts, method, path_with_query, body),
    }


def _problem(status: int, code: str, detail: str) -> ProblemError:
    headers = {"WWW-Authenticate": "Bearer"} if code == "AUTH_INVALID_TOKEN" else None
    return ProblemError(status, code, detail, headers=headers)


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._clock = clock
        self.box = SecretBox(settings.secret_key)
        self._admin_hash = hash_token(settings.admin_token).encode()
        self._partners: dict[str, tuple[float, PartnerPrincipal]] = {}
        self._staff: dict[str, tuple[float, StaffPrincipal]] = {}

    async def authenticate(
        self, method: str, path_with_query: str, headers: Mapping[str, str], body: bytes
    ) -> Principal | None:
        """The caller, or None when the request carries no credentials at all."""
        if any(h in headers for h in ("x-api-key", "x-timestamp", "x-signature")):
            return await self._partner(method, path_with_query, headers, body)
        if "authorization" in headers:
            return await self._staff_token(headers["authorization"])
        return None

    async def _partner(
        self, method: str, path_with_query: str, headers: Mapping[str, str], body: bytes
    ) -> PartnerPrincipal:
        api_key = headers.get("x-api-key")
        timestamp = headers.get("x-timestamp")
        provided = headers.get("x-signature")
        if not api_key or not timestamp or not provided:
            raise _problem(
                401, "AUTH_MISSING", "X-Api-Key, X-Timestamp and X-Signature are required"
            )
        partner = await self._load_partner(api_key)
        if partner is None:
            raise _problem(401, "AUTH_UNKNOWN_KEY", "unknown API key")
        try:
            ts_ms = int(timestamp)
        except ValueError:
            raise _problem(
                401, "AUTH_STALE_TIMESTAMP", "X-Timestamp must be unix epoch milliseconds"
            ) from None
        window_ms = self._settings.signature_window_seconds * 1000
        if abs(self._clock() * 1000 - ts_ms) > window_ms:
            raise _problem(
                401,
                "AUTH_STALE_TIMESTAMP",
                f"X-Timestamp is more than {self._settings.signature_window_seconds}s from the server clock",
            )
        expected = signature(partner.secret, timestamp, method, path_with_query, body)
        if not hmac.compare_digest(expected.encode(), provided.strip().lower().encode("utf-8")):
            raise _problem(401, "AUTH_BAD_SIGNATURE", "the signature does not match the request")
        return partner

    async def _load_partner(self, api_key: str) -> PartnerPrincipal | None:
        now = time.monotonic()
        cached = self._partners.get(api_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._sessions()() as session:
            row = (
                await session.execute(select(partners).where(partners.c.api_key == api_key))
            ).first()
        if row is None:
            return None
        try:
            secret = self.box.decrypt(row.secret_ciphertext, bound_to=row.api_key)
        except SecretBoxError:
            log.error(
                "an API secret does not open with the configured key", extra={"api_key": api_key}
            )
            return None
        partner = PartnerPrincipal(
            partner_id=row.partner_id,
            name=row.name,
            api_key=row.api_key,
            secret=secret,
            rate_per_second=row.rate_per_second,
            rate_burst=row.rate_burst,
        )
        self._partners[api_key] = (now + self._settings.credential_cache_seconds, partner)
        return partner

    async def _staff_token(self, authorization: str) -> StaffPrincipal:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _problem(401, "AUTH_MISSING", "Authorization: Bearer <token> is required")
        digest = hash_token(token)
        if hmac.compare_digest(digest.encode(), self._admin_hash):
            return StaffPrincipal(BOOTSTRAP_ADMIN_ID, "bootstrap admin", "admin")
        now = time.monotonic()
        cached = self._staff.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._sessions()() as session:
            row = (
                await session.execute(
                    select(staff_tokens).where(staff_tokens.c.token_hash == digest)
                )
            ).first()
        if row is None:
            raise _problem(401, "AUTH_INVALID_TOKEN", "unknown or revoked token")
        role = row.role
        assert role in ROLES
        staff = StaffPrincipal(row.token_id, row.name, role)
        self._staff[digest] = (now + self._settings.credential_cache_seconds, staff)
        return staff


# --- route dependencies -------------------------------------------------------------

_api_key_doc = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    scheme_name="PartnerSignature",
    description="API key; also send X-Timestamp and X-Signature (HMAC-SHA256).",
)
_bearer_doc = HTTPBearer(auto_error=False, scheme_name="StaffToken")


def _principal(request: Request) -> Principal | None:
    value = request.scope.get(PRINCIPAL_KEY)
    assert value is None or isinstance(value, PartnerPrincipal | StaffPrincipal)
    return value


async def require_partner(request: Request, _: object = Security(_api_key_doc)) -> PartnerPrincipal:
    principal = _principal(request)
    if not isinstance(principal, PartnerPrincipal):
        raise _problem(401, "AUTH_MISSING", "this endpoint needs a partner's signed request")
    return principal


def require_staff(*roles: Role) -> Callable[..., object]:
    async def dependency(request: Request, _: object = Security(_bearer_doc)) -> StaffPrincipal:
        principal = _principal(request)
        if not isinstance(principal, StaffPrincipal):
            raise _problem(401, "AUTH_MISSING", "this endpoint needs a staff bearer token")
        if principal.role != "admin" and principal.role not in roles:
            raise _problem(403, "FORBIDDEN_ROLE", f"role {principal.role} may not do this")
        return principal

    return dependency


async def require_any(
    request: Request,
    _key: object = Security(_api_key_doc),
    _token: object = Security(_bearer_doc),
) -> Principal:
    principal = _principal(request)
    if principal is None:
        raise _problem(401, "AUTH_MISSING", "credentials are required")
    return principal
