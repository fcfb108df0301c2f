"""The matching outbox's publication tracked by each stream's position, not a mark per row.

Revision ID: matching_0003
"""

from shared.messaging.schema import track_outbox_positions, untrack_outbox_positions

revision = "matching_0003"
down_revision = "matching_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    track_outbox_positions("matching")


def downgrade() -> None:
    untrack_outbox_positions("matching")
