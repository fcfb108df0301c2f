"""The gateway's own tables: partners, staff tokens, audit trail, idempotency records,
reference-data cache, order and trade views, webhooks and their deliveries.

Revision ID: gateway_0002
"""

from alembic import op

revision = "gateway_0002"
down_revision = "gateway_0001"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE gateway.partners (
        partner_id        text PRIMARY KEY,
        name              text NOT NULL,
        api_key           text NOT NULL UNIQUE,
        secret_ciphertext bytea NOT NULL,
        rate_per_second   integer CHECK (rate_per_second > 0),
        rate_burst        integer CHECK (rate_burst > 0),
        created_at        timestamptz NOT NULL
    )""",
    """
    CREATE TABLE gateway.staff_tokens (
        token_id   text PRIMARY KEY,
        name       text NOT NULL,
        role       text NOT NULL CHECK (role IN ('operator', 'auditor', 'admin')),
        token_hash text NOT NULL UNIQUE,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    """
    CREATE TABLE gateway.audit_log (
        id             bigserial PRIMARY KEY,
        occurred_at    timestamptz NOT NULL,
        actor          text NOT NULL,
        actor_name     text NOT NULL,
        role           text NOT NULL,
        method         text NOT NULL,
        path           text NOT NULL,
        status         integer NOT NULL,
        request        jsonb,
        correlation_id text
    )""",
    "CREATE INDEX audit_log_occurred_at ON gateway.audit_log (occurred_at, id)",
    """
    CREATE TABLE gateway.idempotency_keys (
        scope         text NOT NULL,
        key           text NOT NULL,
        request_hash  text NOT NULL,
        status_code   integer,
        content_type  text,
        response_body bytea,
        created_at    timestamptz NOT NULL,
        completed_at  timestamptz,
        PRIMARY KEY (scope, key)
    )""",
    "CREATE INDEX idempotency_keys_created_at ON gateway.idempotency_keys (created_at)",
    """
    CREATE TABLE gateway.instruments (
        code       text PRIMARY KEY,
        state      text NOT NULL,
        data       jsonb NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    """
    CREATE TABLE gateway.members (
        member_id      text PRIMARY KEY,
        partner_id     text NOT NULL,
        qualified      boolean NOT NULL,
        risk_tolerance text NOT NULL,
        fetched_at     timestamptz NOT NULL
    )""",
    """
    CREATE TABLE gateway.orders (
        order_id            text PRIMARY KEY,
        partner_id          text NOT NULL,
        client_order_id     text NOT NULL,
        member_id           text NOT NULL,
        instrument          text NOT NULL,
        side                text NOT NULL CHECK (side IN ('buy', 'sell')),
        price_fen           bigint NOT NULL CHECK (price_fen > 0),
        quantity            bigint NOT NULL CHECK (quantity > 0),
        filled_quantity     bigint NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
        filled_amount_fen   bigint NOT NULL DEFAULT 0,
        fees_fen            bigint NOT NULL DEFAULT 0,
        time_in_force       text NOT NULL,
        status              text NOT NULL,
        reject_reason       text,
        cancel_reason       text,
        business_date       date,
        cancel_requested_at timestamptz,
        created_at          timestamptz NOT NULL,
        updated_at          timestamptz NOT NULL,
        UNIQUE (partner_id, client_order_id)
    )""",
    "CREATE INDEX orders_partner ON gateway.orders (partner_id, order_id DESC)",
    "CREATE INDEX orders_member ON gateway.orders (member_id, order_id DESC)",
    """
    CREATE TABLE gateway.trades (
        id            bigserial PRIMARY KEY,
        trade_id      text NOT NULL,
        order_id      text NOT NULL,
        partner_id    text NOT NULL,
        member_id     text NOT NULL,
        instrument    text NOT NULL,
        side          text NOT NULL,
        price_fen     bigint NOT NULL,
        quantity      bigint NOT NULL,
        amount_fen    bigint NOT NULL,
        fee_fen       bigint NOT NULL,
        liquidity     text NOT NULL CHECK (liquidity IN ('maker', 'taker')),
        business_date date NOT NULL,
        executed_at   timestamptz NOT NULL,
        sequence      bigint NOT NULL,
        UNIQUE (trade_id, order_id)
    )""",
    "CREATE INDEX trades_partner ON gateway.trades (partner_id, id DESC)",
    """
    CREATE TABLE gateway.market_state (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    """
    CREATE TABLE gateway.webhooks (
        webhook_id text PRIMARY KEY,
        partner_id text NOT NULL,
        url        text NOT NULL,
        events     text[] NOT NULL,
        created_at timestamptz NOT NULL
    )""",
    "CREATE INDEX webhooks_partner ON gateway.webhooks (partner_id)",
    """
    CREATE TABLE gateway.webhook_deliveries (
        id              bigserial PRIMARY KEY,
        event_id        text NOT NULL UNIQUE,
        webhook_id      text NOT NULL,
        partner_id      text NOT NULL,
        event_type      text NOT NULL,
        body            bytea NOT NULL,
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        delivered_at    timestamptz,
        last_status     integer,
        last_error      text,
        created_at      timestamptz NOT NULL
    )""",
    """CREATE INDEX webhook_deliveries_due ON gateway.webhook_deliveries (next_attempt_at)
       WHERE delivered_at IS NULL""",
]

TABLES = [
    "webhook_deliveries",
    "webhooks",
    "market_state",
    "trades",
    "orders",
    "members",
    "instruments",
    "idempotency_keys",
    "audit_log",
    "staff_tokens",
    "partners",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE gateway.{table}")
