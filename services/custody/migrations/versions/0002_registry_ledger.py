"""Custody registry and ledger: members, products, accounts, the hash-chained journal,
reservations, settlement obligations, deposits, withdrawals and settlement batches.

Kept as frozen SQL: a migration must keep meaning what it meant when it was written.

Revision ID: custody_0002
"""

from alembic import op

revision = "custody_0002"
down_revision = "custody_0001"
branch_labels = None
depends_on = None

STATEMENTS = [
    "CREATE SEQUENCE custody.sub_account_serial START 1",
    """
    CREATE TABLE custody.business_day (
        id            smallint PRIMARY KEY CHECK (id = 1),
        business_date date NOT NULL,
        updated_at    timestamptz NOT NULL DEFAULT now()
    )""",
    "INSERT INTO custody.business_day (id, business_date) VALUES (1, (now() AT TIME ZONE 'utc')::date)",
    """
    CREATE TABLE custody.members (
        member_id      text PRIMARY KEY,
        partner_id     text NOT NULL,
        external_ref   text NOT NULL,
        name           text NOT NULL,
        kind           text NOT NULL CHECK (kind IN ('individual', 'institution')),
        qualified      boolean NOT NULL,
        risk_tolerance text NOT NULL CHECK (risk_tolerance IN ('C1', 'C2', 'C3', 'C4', 'C5')),
        sub_account    text NOT NULL UNIQUE,
        created_at     timestamptz NOT NULL,
        UNIQUE (partner_id, external_ref)
    )""",
    """
    CREATE TABLE custody.products (
        code                text PRIMARY KEY,
        name                text NOT NULL,
        issuer              text NOT NULL,
        product_type        text NOT NULL,
        face_value_fen      bigint NOT NULL CHECK (face_value_fen > 0),
        issue_size          bigint NOT NULL CHECK (issue_size > 0),
        expected_yield      text NOT NULL,
        term_days           integer NOT NULL CHECK (term_days > 0),
        maturity_date       date NOT NULL,
        risk_level          text NOT NULL CHECK (risk_level IN ('R1', 'R2', 'R3', 'R4', 'R5')),
        tick_fen            bigint NOT NULL CHECK (tick_fen > 0),
        lot_size            bigint NOT NULL CHECK (lot_size > 0),
        min_order_qty       bigint NOT NULL CHECK (min_order_qty > 0),
        min_order_value_fen bigint NOT NULL CHECK (min_order_value_fen >= 0),
        price_band_pct      text NOT NULL,
        reference_price_fen bigint NOT NULL CHECK (reference_price_fen > 0),
        band_low_fen        bigint NOT NULL,
        band_high_fen       bigint NOT NULL,
        max_holders         integer NOT NULL CHECK (max_holders > 0),
        transferable        boolean NOT NULL,
        disclosure          jsonb NOT NULL,
        state               text NOT NULL CHECK (state IN ('trading', 'halted', 'delisted')),
        holder_count        integer NOT NULL DEFAULT 0 CHECK (holder_count >= 0),
        created_at          timestamptz NOT NULL,
        updated_at          timestamptz NOT NULL,
        CHECK (holder_count <= max_holders)
    )""",
    # One account per (owner, asset). Member and fee accounts can never go negative nor
    # promise more than they hold; bank and issuance accounts are the external
    # counter-accounts (their balances are the negatives of what entered the ledger).
    """
    CREATE TABLE custody.accounts (
        id          bigserial PRIMARY KEY,
        owner_kind  text NOT NULL
                    CHECK (owner_kind IN ('member', 'fee', 'bank', 'issuer', 'issuance')),
        owner_id    text NOT NULL,
        asset       text NOT NULL,
        settled     bigint NOT NULL DEFAULT 0,
        held        bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
        pending_in  bigint NOT NULL DEFAULT 0 CHECK (pending_in >= 0),
        pending_out bigint NOT NULL DEFAULT 0 CHECK (pending_out >= 0),
        UNIQUE (owner_kind, owner_id, asset),
        CONSTRAINT accounts_never_overdrawn CHECK (
            owner_kind IN ('bank', 'issuance')
            OR (settled >= 0 AND settled - held - pending_out >= 0)
        )
    )""",
    "CREATE INDEX accounts_asset ON custody.accounts (asset, owner_kind)",
    "INSERT INTO custody.accounts (owner_kind, owner_id, asset) VALUES ('bank', '', 'CNY')",
    "INSERT INTO custody.accounts (owner_kind, owner_id, asset) VALUES ('fee', '', 'CNY')",
    # The journal: entries chained by hash, each with its balanced postings.
    """
    CREATE TABLE custody.journal_head (
        id        smallint PRIMARY KEY CHECK (id = 1),
        last_seq  bigint NOT NULL,
        last_hash text NOT NULL
    )""",
    "INSERT INTO custody.journal_head (id, last_seq, last_hash) VALUES (1, 0, repeat('0', 64))",
    """
    CREATE TABLE custody.entries (
        seq           bigint PRIMARY KEY CHECK (seq > 0),
        entry_id      text NOT NULL UNIQUE,
        kind          text NOT NULL,
        reference     text NOT NULL,
        business_date date NOT NULL,
        created_at    timestamptz NOT NULL,
        prev_hash     text NOT NULL,
        hash          text NOT NULL,
        UNIQUE (kind, reference)
    )""",
    """
    CREATE TABLE custody.postings (
        entry_seq     bigint NOT NULL REFERENCES custody.entries (seq),
        line          integer NOT NULL CHECK (line >= 0),
        account_id    bigint NOT NULL REFERENCES custody.accounts (id),
        asset         text NOT NULL,
        amount        bigint NOT NULL CHECK (amount <> 0),
        kind          text NOT NULL,
        reference     text NOT NULL,
        business_date date NOT NULL,
        created_at    timestamptz NOT NULL,
        PRIMARY KEY (entry_seq, line)
    )""",
    "CREATE INDEX postings_account ON custody.postings (account_id, entry_seq DESC, line DESC)",
    """
    CREATE TABLE custody.reservations (
        order_id     text PRIMARY KEY,
        member_id    text NOT NULL REFERENCES custody.members (member_id),
        instrument   text NOT NULL REFERENCES custody.products (code),
        side         text NOT NULL CHECK (side IN ('BUY', 'SELL')),
        price_fen    bigint NOT NULL CHECK (price_fen > 0),
        quantity     bigint NOT NULL CHECK (quantity > 0),
        remaining    bigint NOT NULL CHECK (remaining >= 0),
        fees_charged bigint NOT NULL DEFAULT 0 CHECK (fees_charged >= 0),
        held         bigint NOT NULL CHECK (held >= 0),
        account_id   bigint NOT NULL REFERENCES custody.accounts (id),
        status       text NOT NULL CHECK (status IN ('open', 'closed')),
        close_reason text,
        created_at   timestamptz NOT NULL,
        CHECK (status = 'open' OR held = 0)
    )""",
    "CREATE INDEX reservations_open ON custody.reservations (instrument, side) WHERE status = 'open'",
    "CREATE INDEX reservations_account ON custody.reservations (account_id) WHERE status = 'open'",
    # Settlement obligations: one row per trade, settled by the batch of its business date.
    """
    CREATE TABLE custody.trades (
        trade_id         text PRIMARY KEY,
        instrument       text NOT NULL REFERENCES custody.products (code),
        business_date    date NOT NULL,
        price_fen        bigint NOT NULL CHECK (price_fen > 0),
        quantity         bigint NOT NULL CHECK (quantity > 0),
        buyer_member_id  text NOT NULL,
        seller_member_id text NOT NULL,
        buyer_order_id   text NOT NULL,
        seller_order_id  text NOT NULL,
        buyer_fee_fen    bigint NOT NULL CHECK (buyer_fee_fen >= 0),
        seller_fee_fen   bigint NOT NULL CHECK (seller_fee_fen >= 0),
        created_at       timestamptz NOT NULL
    )""",
    "CREATE INDEX trades_business_date ON custody.trades (business_date)",
    """
    CREATE TABLE custody.deposits (
        deposit_id     text PRIMARY KEY,
        bank_reference text NOT NULL UNIQUE,
        member_id      text NOT NULL REFERENCES custody.members (member_id),
        amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
        business_date  date NOT NULL,
        entry_seq      bigint NOT NULL REFERENCES custody.entries (seq),
        created_at     timestamptz NOT NULL
    )""",
    """
    CREATE TABLE custody.withdrawals (
        withdrawal_id text PRIMARY KEY,
        member_id     text NOT NULL REFERENCES custody.members (member_id),
        account_id    bigint NOT NULL REFERENCES custody.accounts (id),
        amount_fen    bigint NOT NULL CHECK (amount_fen > 0),
        status        text NOT NULL CHECK (status IN ('pending', 'sent', 'completed', 'failed')),
        business_date date NOT NULL,
        batch_id      text,
        created_at    timestamptz NOT NULL,
        updated_at    timestamptz NOT NULL
    )""",
    "CREATE INDEX withdrawals_member ON custody.withdrawals (member_id, created_at DESC)",
    "CREATE INDEX withdrawals_pending ON custody.withdrawals (business_date) WHERE status = 'pending'",
    """
    CREATE TABLE custody.settlement_batches (
        batch_id      text PRIMARY KEY,
        business_date date NOT NULL UNIQUE,
        request_hash  text NOT NULL,
        entry_seq     bigint REFERENCES custody.entries (seq),
        result        jsonb NOT NULL,
        created_at    timestamptz NOT NULL
    )""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "settlement_batches",
        "withdrawals",
        "deposits",
        "trades",
        "reservations",
        "postings",
        "entries",
        "journal_head",
        "accounts",
        "products",
        "members",
        "business_day",
    ):
        op.execute(f"DROP TABLE custody.{table}")
    op.execute("DROP SEQUENCE custody.sub_account_serial")
