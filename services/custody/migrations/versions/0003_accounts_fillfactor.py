"""Accounts: leave room on every page so balance updates are HOT (heap-only tuples).

No indexed column of an account ever changes after it is created (settled, held and the
pending amounts are not indexed), so with free space on the page an update writes no index
entries. The settlement batch updates ~100,000 accounts in one statement; without room each
of those updates also inserted into all three account indexes. Half of each page is left
free because one statement updates every row of a page once and cannot reuse the space of
its own old versions (at 70% only ~40% of the batch's updates were heap-only). New and rewritten pages
follow the setting; existing pages gain room as their old row versions are pruned.

Revision ID: custody_0003
"""

from alembic import op

revision = "custody_0003"
down_revision = "custody_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE custody.accounts SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE custody.accounts RESET (fillfactor)")
