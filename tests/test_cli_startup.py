"""The staff commands that only call a service over HTTP (`exchange eod run`,
`exchange recon load`) start without loading the services' database stack: their
start-up is part of what operators wait for at end of day."""

import subprocess
import sys

HEAVY = ("sqlalchemy", "alembic", "asyncpg", "aio_pika", "fastapi", "services.clearing.eod")


def test_exchange_cli_loads_no_database_stack_until_a_command_needs_it() -> None:
    probe = (
        f"import sys, exchange_cli.main; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_every_command_is_still_registered() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "exchange_cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("run", "db", "infra", "bank", "ledger", "eod", "recon", "demo", "dlq"):
        assert command in out
