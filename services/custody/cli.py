"""`exchange ledger ...`: operator commands on the custody ledger."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from services.custody.verify import Check

app = typer.Typer(
    help="The custody ledger: verify the journal and its invariants.", no_args_is_help=True
)


async def _verify(database_url: str) -> list[Check]:
    # Imported here: the other `exchange` commands start without SQLAlchemy.
    from services.custody.verify import run_checks
    from shared.db import make_engine

    engine = make_engine(database_url, pool_size=1, application_name="ledger-verify")
    try:
        return await run_checks(engine)
    finally:
        await engine.dispose()


@app.command("verify")
def verify() -> None:
    """Check the journal's hash chain and every ledger invariant; exit 1 naming what failed."""
    from services.custody.settings import CustodySettings

    settings = CustodySettings()
    results = asyncio.run(_verify(settings.database_url))
    console = Console(highlight=False, width=160)
    table = Table(title="custody ledger verification")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in results:
        table.add_row(
            check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail
        )
    console.print(table)
    failed = [c.name for c in results if not c.ok]
    if failed:
        console.print(f"[red]ledger verification failed: {', '.join(failed)}[/red]")
        raise typer.Exit(code=1)
    console.print("ledger verified: every check passed")
