"""Typed settings from the environment (prefix ``EXCHANGE_``) with working local defaults."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every service and command shares."""

    model_config = SettingsConfigDict(env_prefix="EXCHANGE_", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/exchange"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: Prefix of every exchange and queue name; tests use their own so they never meet `make run`.
    broker_prefix: str = "exchange"
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    #: Messages in flight per consumer before acknowledgement.
    prefetch: int = Field(default=200, ge=1, le=10_000)
    #: Deliveries of one message before it goes to the dead-letter queue.
    delivery_limit: int = Field(default=5, ge=1, le=1000)
    #: How often the outbox relay looks for work when no notification woke it.
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    #: How long published outbox rows are kept (matching keeps its outbox for recovery).
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    #: How often a service deletes its published outbox rows past the retention.
    outbox_prune_interval_seconds: float = Field(default=600.0, gt=0)
    #: How long inbox records are kept once their stream's position covers them (a
    #: redelivery is then recognised by its sequence: ``shared.messaging.inbox``).
    inbox_retention_hours: float = Field(default=72.0, gt=0)
    #: How often a service deletes its inbox records past the retention.
    inbox_prune_interval_seconds: float = Field(default=600.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
    #: Matching shards; products are spread over them by code. Every service must agree.
    matching_shards: int = Field(default=2, ge=1, le=64)
    #: The address services listen on.
    host: str = "127.0.0.1"
    gateway_port: int = 8000
    custody_port: int = 8001
    matching_port: int = 8002
    clearing_port: int = 8003
    #: Where other services reach each one; by default http://{host}:{port}.
    gateway_url: str | None = None
    custody_url: str | None = None
    matching_url: str | None = None
    clearing_url: str | None = None

    def port_of(self, service: str) -> int:
        port = getattr(self, f"{service}_port", None)
        if not isinstance(port, int):
            raise ValueError(f"unknown service {service!r}")
        return port

    def url_of(self, service: str) -> str:
        configured = getattr(self, f"{service}_url", None)
        if isinstance(configured, str) and configured:
            return configured.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port_of(service)}"
