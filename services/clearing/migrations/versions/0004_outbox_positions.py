"""The clearing outbox's publication tracked by each stream's position, not a mark per row.

Revision ID: clearing_0004
"""

from shared.messaging.schema import track_outbox_positions, untrack_outbox_positions

revision = "clearing_0004"
down_revision = "clearing_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    track_outbox_positions("clearing")


def downgrade() -> None:
    untrack_outbox_positions("clearing")
