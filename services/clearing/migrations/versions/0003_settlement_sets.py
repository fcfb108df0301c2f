"""The end-of-day netting as rows: per member cash and fees, per member and product units
(written by the run's ``net`` phase in SQL; the settlement report, the instruction file and
members' statements are read from them).

Revision ID: clearing_0003
"""

from alembic import op

revision = "clearing_0003"
down_revision = "clearing_0002"
branch_labels = None
depends_on = None

STATEMENTS = [
    """
    CREATE TABLE clearing.settlement_members (
        business_date date NOT NULL,
        member_id     text NOT NULL,
        net_cash_fen  bigint NOT NULL,
        fees_fen      bigint NOT NULL CHECK (fees_fen >= 0),
        trade_count   bigint NOT NULL CHECK (trade_count > 0),
        PRIMARY KEY (business_date, member_id)
    )""",
    """
    CREATE TABLE clearing.settlement_units (
        business_date date NOT NULL,
        member_id     text NOT NULL,
        instrument    text NOT NULL,
        net_units     bigint NOT NULL,
        PRIMARY KEY (business_date, member_id, instrument)
    )""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE clearing.settlement_units")
    op.execute("DROP TABLE clearing.settlement_members")
