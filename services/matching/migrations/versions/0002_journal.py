"""The matching journal (every command applied, in order) and shard snapshots.

Revision ID: matching_0002
"""

from alembic import op

revision = "matching_0002"
down_revision = "matching_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE matching.journal (
            shard        integer NOT NULL,
            seq          bigint NOT NULL CHECK (seq > 0),
            message_id   uuid NOT NULL UNIQUE,
            executed_at  text NOT NULL,
            command      bytea NOT NULL,
            recorded_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shard, seq)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE matching.snapshots (
            shard       integer NOT NULL,
            head        bigint NOT NULL,
            books_hash  text NOT NULL,
            state       bytea NOT NULL,
            taken_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shard, head)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE matching.snapshots")
    op.execute("DROP TABLE matching.journal")
