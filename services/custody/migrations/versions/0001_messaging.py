"""The custody schema's outbox and inbox.

Revision ID: custody_0001
"""

from shared.messaging.schema import create_messaging_tables, drop_messaging_tables

revision = "custody_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables("custody")


def downgrade() -> None:
    drop_messaging_tables("custody")
