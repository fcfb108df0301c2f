"""DDL of the outbox and inbox tables, for the first migration of each service's schema.

Kept as frozen SQL: a migration must keep meaning what it meant when it was written.
"""

from alembic import op

from shared.db import check_identifier


def _execute(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def create_messaging_tables(schema: str) -> None:
    s = check_identifier(schema)
    statements = [
        f"""
        CREATE TABLE {s}.outbox (
            id             bigserial PRIMARY KEY,
            message_id     uuid NOT NULL UNIQUE,
            stream         text NOT NULL,
            sequence       bigint NOT NULL CHECK (sequence > 0),
            routing_key    text NOT NULL,
            message_type   text NOT NULL,
            correlation_id text,
            body           bytea NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now(),
            published_at   timestamptz,
            UNIQUE (stream, sequence)
        )""",
        f"CREATE INDEX outbox_unpublished ON {s}.outbox (id) WHERE published_at IS NULL",
        f"""
        CREATE TABLE {s}.outbox_stream (
            stream        text PRIMARY KEY,
            last_sequence bigint NOT NULL CHECK (last_sequence >= 0)
        )""",
        f"""
        CREATE TABLE {s}.inbox (
            consumer    text NOT NULL,
            message_id  uuid NOT NULL,
            stream      text NOT NULL,
            sequence    bigint NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, message_id)
        )""",
        f"CREATE INDEX inbox_stream_sequence ON {s}.inbox (consumer, stream, sequence)",
        f"""
        CREATE TABLE {s}.inbox_stream (
            consumer        text NOT NULL,
            stream          text NOT NULL,
            contiguous_upto bigint NOT NULL,
            highest_seen    bigint NOT NULL,
            PRIMARY KEY (consumer, stream)
        )""",
        f"""
        CREATE FUNCTION {s}.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{s}_outbox', '');
            RETURN NULL;
        END $$""",
        f"""
        CREATE TRIGGER outbox_notify AFTER INSERT ON {s}.outbox
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_outbox()""",
    ]
    _execute(statements)


def track_outbox_positions(schema: str) -> None:
    """Publication tracked by each stream's position instead of a mark on every row.

    A stream's sequence numbers are allocated under its ``outbox_stream`` row's lock, held
    to the commit, so they become visible in order: whatever is committed past a stream's
    published position is exactly what is left to publish. Marking rows sent was an update
    of each row (a new version of the row and of its indexes' entries), and the relay's read
    of the unsent rows walked the dead entries of its partial index until a vacuum.
    """
    s = check_identifier(schema)
    statements = [
        f"""
        CREATE TABLE {s}.outbox_published (
            stream     text PRIMARY KEY,
            upto       bigint NOT NULL CHECK (upto >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        f"""
        INSERT INTO {s}.outbox_published (stream, upto)
        SELECT stream,
               coalesce(min(sequence) FILTER (WHERE published_at IS NULL) - 1, max(sequence))
        FROM {s}.outbox GROUP BY stream""",
        f"DROP INDEX {s}.outbox_unpublished",
        f"ALTER TABLE {s}.outbox DROP COLUMN published_at",
    ]
    _execute(statements)


def untrack_outbox_positions(schema: str) -> None:
    s = check_identifier(schema)
    statements = [
        f"ALTER TABLE {s}.outbox ADD COLUMN published_at timestamptz",
        f"""
        UPDATE {s}.outbox o SET published_at = p.updated_at
        FROM {s}.outbox_published p WHERE p.stream = o.stream AND o.sequence <= p.upto""",
        f"CREATE INDEX outbox_unpublished ON {s}.outbox (id) WHERE published_at IS NULL",
        f"DROP TABLE {s}.outbox_published",
    ]
    _execute(statements)


def drop_messaging_tables(schema: str) -> None:
    s = check_identifier(schema)
    for table in ("inbox_stream", "inbox", "outbox_stream", "outbox"):
        op.execute(f"DROP TABLE {s}.{table}")
    op.execute(f"DROP FUNCTION {s}.notify_outbox()")
