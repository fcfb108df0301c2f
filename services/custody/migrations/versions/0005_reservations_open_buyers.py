"""Reservations: an index of the open buys by product and member.

Whether a member is a holder candidate of a product (an open buy of it) and how many
distinct candidates a product has were answered from ``reservations_open`` (by product
and side), reading every open order of the product's buy side for each question.

Revision ID: custody_0005
"""

from alembic import op

revision = "custody_0005"
down_revision = "custody_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX reservations_open_buyers ON custody.reservations (instrument, member_id) "
        "WHERE status = 'open' AND side = 'BUY'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX custody.reservations_open_buyers")
