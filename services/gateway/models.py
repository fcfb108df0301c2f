"""The gateway's tables (schema ``gateway``): credentials, idempotency records, the
reference-data cache, the order and trade views, webhooks and the audit trail.

SQLAlchemy Core tables; the DDL itself lives in the Alembic migrations."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql.base import PGDialect

SCHEMA = "gateway"
metadata = MetaData(schema=SCHEMA)

partners = Table(
    "partners",
    metadata,
    Column("partner_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("api_key", Text, nullable=False, unique=True),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    Column("rate_per_second", Integer),
    Column("rate_burst", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

staff_tokens = Table(
    "staff_tokens",
    metadata,
    Column("token_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    Column("actor_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("request", JSONB),
    Column("correlation_id", Text),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("status_code", Integer),
    Column("content_type", Text),
    Column("response_body", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)

instruments = Table(
    "instruments",
    metadata,
    Column("code", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("partner_id", Text, nullable=False),
    Column("qualified", Boolean, nullable=False),
    Column("risk_tolerance", Text, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("partner_id", Text, nullable=False),
    Column("client_order_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("instrument", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("filled_quantity", BigInteger, nullable=False),
    Column("filled_amount_fen", BigInteger, nullable=False),
    Column("fees_fen", BigInteger, nullable=False),
    Column("time_in_force", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reject_reason", Text),
    Column("cancel_reason", Text),
    Column("business_date", Date),
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

trades = Table(
    "trades",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("trade_id", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("instrument", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("fee_fen", BigInteger, nullable=False),
    Column("liquidity", Text, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("executed_at", DateTime(timezone=True), nullable=False),
    Column("sequence", BigInteger, nullable=False),
)

market_state = Table(
    "market_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", Text, primary_key=True),
    Column("partner_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("webhook_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


_POSTGRES = PGDialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy


def sql_type(table: Table, column: str) -> str:
    """A column's PostgreSQL type as SQL text (for the casts of set-based statements that
    take each column as an array)."""
    return str(table.c[column].type.compile(dialect=_POSTGRES))
