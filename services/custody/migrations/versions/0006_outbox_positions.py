"""The custody outbox's publication tracked by each stream's position, not a mark per row.

Revision ID: custody_0006
"""

from shared.messaging.schema import track_outbox_positions, untrack_outbox_positions

revision = "custody_0006"
down_revision = "custody_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    track_outbox_positions("custody")


def downgrade() -> None:
    untrack_outbox_positions("custody")
