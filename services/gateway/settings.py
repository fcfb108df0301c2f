"""The gateway's settings: the common ones plus credentials, limits and delivery timings."""

import logging
from typing import Literal

from pydantic import Field

from shared.config import CommonSettings

log = logging.getLogger(__name__)

#: Used when EXCHANGE_ADMIN_TOKEN is not set: fine on a laptop, logged loudly at start.
DEFAULT_ADMIN_TOKEN = "local-admin-token"
#: Used when EXCHANGE_SECRET_KEY is not set: API secrets are then only obfuscated.
DEFAULT_SECRET_KEY = "local-insecure-secret-key"


class GatewaySettings(CommonSettings):
    #: The bootstrap admin bearer token (EXCHANGE_ADMIN_TOKEN).
    admin_token: str = DEFAULT_ADMIN_TOKEN
    #: The key API secrets are encrypted with at rest (EXCHANGE_SECRET_KEY).
    secret_key: str = DEFAULT_SECRET_KEY
    #: Partner signatures must carry a timestamp within this many seconds of now.
    signature_window_seconds: int = Field(default=30, ge=1)
    #: Default per-API-key token bucket (partners may have their own).
    rate_limit_per_second: int = Field(default=200, ge=1)
    rate_limit_burst: int = Field(default=400, ge=1)
    #: Idempotency records are kept at least this long.
    idempotency_ttl_hours: int = Field(default=48, ge=24)
    #: How long a duplicate request waits for the first one with the same key to finish.
    idempotency_wait_seconds: float = Field(default=10.0, gt=0)
    #: Timeout of calls to custody, matching and clearing.
    downstream_timeout_seconds: float = Field(default=10.0, gt=0)
    #: How long halt/resume/delist wait for custody to report the new state.
    control_wait_seconds: float = Field(default=2.0, ge=0)
    #: Webhook delivery: first retry delay, cap, poll interval and request timeout.
    webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    #: How WebSocket pushes reach every instance: through PostgreSQL NOTIFY, or only the
    #: instance that consumes gateway.events.
    ws_fanout: Literal["postgres", "local"] = "postgres"
    #: How long cached partner and staff credentials are trusted before re-reading them.
    credential_cache_seconds: float = Field(default=30.0, ge=0)

    def warn_defaults(self) -> None:
        if self.admin_token == DEFAULT_ADMIN_TOKEN:
            log.warning(
                "EXCHANGE_ADMIN_TOKEN is not set: using the local default admin token",
                extra={"admin_token": DEFAULT_ADMIN_TOKEN},
            )
        if self.secret_key == DEFAULT_SECRET_KEY:
            log.warning("EXCHANGE_SECRET_KEY is not set: API secrets use the local default key")
