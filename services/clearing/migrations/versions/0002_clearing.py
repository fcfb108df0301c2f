"""Clearing: business dates, captured trades and fees, end-of-day runs, instruction files,
reconciliation reports and the audit trail.

Revision ID: clearing_0002
"""

from alembic import op

revision = "clearing_0002"
down_revision = "clearing_0001"
branch_labels = None
depends_on = None

STATEMENTS = [
    # The initial business date follows custody's rule: the UTC date at migration time.
    """
    CREATE TABLE clearing.business_day (
        id            smallint PRIMARY KEY CHECK (id = 1),
        business_date date NOT NULL,
        status        text NOT NULL CHECK (status IN ('open', 'closing')),
        updated_at    timestamptz NOT NULL DEFAULT now()
    )""",
    "INSERT INTO clearing.business_day (id, business_date, status) "
    "VALUES (1, (now() AT TIME ZONE 'utc')::date, 'open')",
    """
    CREATE TABLE clearing.trades (
        trade_id         text PRIMARY KEY,
        instrument       text NOT NULL,
        business_date    date NOT NULL,
        book_seq         bigint NOT NULL,
        stream_seq       bigint NOT NULL,
        price_fen        bigint NOT NULL CHECK (price_fen > 0),
        quantity         bigint NOT NULL CHECK (quantity > 0),
        amount_fen       bigint NOT NULL CHECK (amount_fen = price_fen * quantity),
        buyer_member_id  text NOT NULL,
        seller_member_id text NOT NULL,
        buy_order_id     text NOT NULL,
        sell_order_id    text NOT NULL,
        taker_side       text NOT NULL CHECK (taker_side IN ('BUY', 'SELL')),
        buyer_fee_fen    bigint NOT NULL CHECK (buyer_fee_fen >= 0 AND buyer_fee_fen <= amount_fen),
        seller_fee_fen   bigint NOT NULL CHECK (seller_fee_fen >= 0 AND seller_fee_fen <= amount_fen),
        executed_at      timestamptz NOT NULL,
        captured_at      timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX trades_by_date ON clearing.trades (business_date, instrument, book_seq)",
    "CREATE INDEX trades_by_buyer ON clearing.trades (buyer_member_id, business_date)",
    "CREATE INDEX trades_by_seller ON clearing.trades (seller_member_id, business_date)",
    """
    CREATE TABLE clearing.order_fees (
        order_id   text PRIMARY KEY,
        member_id  text NOT NULL,
        side       text NOT NULL CHECK (side IN ('BUY', 'SELL')),
        fees_fen   bigint NOT NULL CHECK (fees_fen >= 0),
        fills      integer NOT NULL CHECK (fills >= 0)
    )""",
    """
    CREATE TABLE clearing.day_rolls (
        instrument    text NOT NULL,
        previous_date date NOT NULL,
        business_date date NOT NULL,
        book_seq      bigint NOT NULL,
        stream_seq    bigint NOT NULL,
        recorded_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (instrument, previous_date)
    )""",
    """
    CREATE TABLE clearing.eod_runs (
        business_date  date PRIMARY KEY,
        status         text NOT NULL
                       CHECK (status IN ('running', 'settled', 'failed', 'reconciled', 'breaks')),
        phase          text NOT NULL,
        progress_done  bigint NOT NULL DEFAULT 0,
        progress_total bigint NOT NULL DEFAULT 0,
        trade_count    bigint,
        fee_total_fen  bigint,
        batch_id       text NOT NULL,
        batch_result   jsonb,
        report         jsonb,
        error          text,
        started_at     timestamptz NOT NULL,
        finished_at    timestamptz,
        updated_at     timestamptz NOT NULL DEFAULT now()
    )""",
    """
    CREATE TABLE clearing.instruction_files (
        business_date  date PRIMARY KEY,
        content        text NOT NULL,
        row_count      integer NOT NULL,
        debit_fen      bigint NOT NULL,
        credit_fen     bigint NOT NULL,
        withdrawal_fen bigint NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now()
    )""",
    """
    CREATE TABLE clearing.reconciliations (
        id            bigserial PRIMARY KEY,
        business_date date NOT NULL,
        status        text NOT NULL CHECK (status IN ('balanced', 'breaks')),
        statement     text NOT NULL,
        report        jsonb NOT NULL,
        loaded_at     timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX reconciliations_by_date ON clearing.reconciliations (business_date, id)",
    """
    CREATE TABLE clearing.audit (
        id            bigserial PRIMARY KEY,
        at            timestamptz NOT NULL DEFAULT now(),
        action        text NOT NULL,
        business_date date,
        detail        jsonb NOT NULL DEFAULT '{}'::jsonb
    )""",
]

TABLES = (
    "audit",
    "reconciliations",
    "instruction_files",
    "eod_runs",
    "day_rolls",
    "order_fees",
    "trades",
    "business_day",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE clearing.{table}")
