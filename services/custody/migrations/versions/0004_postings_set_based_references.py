"""Postings: check their references once per statement instead of once per row.

The two foreign keys of ``custody.postings`` (to ``accounts`` and ``entries``) ran one
lookup and one row lock per posting: two thirds of the time of writing a 100,000-posting
settlement entry. They are replaced by the same rules, checked set-based:

* every inserted or updated posting must refer to an existing account and entry (one
  anti-join over the statement's new rows; the ledger has already locked the accounts of
  the entry FOR UPDATE and the entry is its own uncommitted row, so neither can be removed
  under it);
* an account or entry that postings refer to cannot be deleted (one join over the
  statement's deleted rows), and their ids never change.

The error is the one a foreign key raises (SQLSTATE 23503).

Revision ID: custody_0004
"""

from alembic import op

revision = "custody_0004"
down_revision = "custody_0003"
branch_labels = None
depends_on = None

STATEMENTS = [
    "ALTER TABLE custody.postings DROP CONSTRAINT postings_account_id_fkey",
    "ALTER TABLE custody.postings DROP CONSTRAINT postings_entry_seq_fkey",
    """
    CREATE FUNCTION custody.postings_references_exist() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM new_postings n
            WHERE NOT EXISTS (SELECT 1 FROM custody.accounts a WHERE a.id = n.account_id)
               OR NOT EXISTS (SELECT 1 FROM custody.entries e WHERE e.seq = n.entry_seq)
        ) THEN
            RAISE EXCEPTION 'a posting refers to an account or entry that does not exist'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER postings_references_on_insert AFTER INSERT ON custody.postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION custody.postings_references_exist()""",
    """
    CREATE TRIGGER postings_references_on_update AFTER UPDATE ON custody.postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION custody.postings_references_exist()""",
    """
    CREATE FUNCTION custody.accounts_not_referenced() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM old_rows o JOIN custody.postings p ON p.account_id = o.id) THEN
            RAISE EXCEPTION 'an account with postings cannot be deleted'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER accounts_referenced_on_delete AFTER DELETE ON custody.accounts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION custody.accounts_not_referenced()""",
    """
    CREATE FUNCTION custody.entries_not_referenced() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM old_rows o JOIN custody.postings p ON p.entry_seq = o.seq) THEN
            RAISE EXCEPTION 'an entry with postings cannot be deleted'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER entries_referenced_on_delete AFTER DELETE ON custody.entries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION custody.entries_not_referenced()""",
    """
    CREATE FUNCTION custody.key_is_fixed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'account ids and entry sequence numbers never change'
            USING ERRCODE = 'foreign_key_violation';
    END $$""",
    """
    CREATE TRIGGER accounts_id_fixed BEFORE UPDATE OF id ON custody.accounts
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION custody.key_is_fixed()""",
    """
    CREATE TRIGGER entries_seq_fixed BEFORE UPDATE OF seq ON custody.entries
    FOR EACH ROW WHEN (OLD.seq IS DISTINCT FROM NEW.seq)
    EXECUTE FUNCTION custody.key_is_fixed()""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER entries_seq_fixed ON custody.entries")
    op.execute("DROP TRIGGER accounts_id_fixed ON custody.accounts")
    op.execute("DROP FUNCTION custody.key_is_fixed()")
    op.execute("DROP TRIGGER entries_referenced_on_delete ON custody.entries")
    op.execute("DROP FUNCTION custody.entries_not_referenced()")
    op.execute("DROP TRIGGER accounts_referenced_on_delete ON custody.accounts")
    op.execute("DROP FUNCTION custody.accounts_not_referenced()")
    op.execute("DROP TRIGGER postings_references_on_update ON custody.postings")
    op.execute("DROP TRIGGER postings_references_on_insert ON custody.postings")
    op.execute("DROP FUNCTION custody.postings_references_exist()")
    op.execute(
        "ALTER TABLE custody.postings ADD CONSTRAINT postings_entry_seq_fkey "
        "FOREIGN KEY (entry_seq) REFERENCES custody.entries (seq)"
    )
    op.execute(
        "ALTER TABLE custody.postings ADD CONSTRAINT postings_account_id_fkey "
        "FOREIGN KEY (account_id) REFERENCES custody.accounts (id)"
    )
