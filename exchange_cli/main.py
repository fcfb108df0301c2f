"""`exchange`: the one command operators run by hand."""

import asyncio

import typer
from rich.console import Console

from banksim.cli import app as bank_simulator_app
from exchange_cli import infra
from exchange_cli.supervisor import run_services
from services.clearing.cli import eod_app, recon_app
from services.custody.cli import app as ledger_app
from shared.config import CommonSettings
from shared.migrations import ensure_database, upgrade_all

app = typer.Typer(
    help="Operate the exchange: run it, migrate it, settle and reconcile.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema of every service.", no_args_is_help=True)
infra_app = typer.Typer(help="Local PostgreSQL and RabbitMQ.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(infra_app, name="infra")
bank_app = typer.Typer(help="The custody bank's side.", no_args_is_help=True)
bank_app.add_typer(
    bank_simulator_app,
    name="simulate",
    help="A stand-in custody bank for demos and tests: deposits, instruction files, statements.",
)
app.add_typer(bank_app, name="bank")
app.add_typer(ledger_app, name="ledger")
app.add_typer(eod_app, name="eod")
app.add_typer(recon_app, name="recon")

console = Console(highlight=False)


def _ensure_infra(settings: CommonSettings) -> None:
    problems = infra.ensure(
        infra.dependencies(settings.database_url, settings.amqp_url), log=console.print
    )
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        raise typer.Exit(code=2)


@infra_app.command("ensure")
def infra_ensure() -> None:
    """Make sure PostgreSQL and RabbitMQ answer, starting the local ones if they are down."""
    settings = CommonSettings()
    _ensure_infra(settings)
    console.print("PostgreSQL and RabbitMQ are reachable")


@db_app.command("migrate")
def db_migrate() -> None:
    """Create the database if needed and bring every service's schema up to date."""
    settings = CommonSettings()
    created = asyncio.run(ensure_database(settings.database_url))
    upgrade_all(settings.database_url)
    console.print(("created and " if created else "") + "migrated every service schema")


@app.command("run")
def run(
    ready_timeout: float = typer.Option(
        90.0, help="Seconds to wait for every service to be ready."
    ),
) -> None:
    """Start the whole system in the foreground: check infrastructure, migrate, run all four
    services, and print their URLs. Ctrl-C stops everything."""
    settings = CommonSettings()
    _ensure_infra(settings)
    upgrade_all(settings.database_url)
    console.print("database migrated; starting services")
    raise typer.Exit(code=run_services(settings, ready_timeout=ready_timeout))


if __name__ == "__main__":
    app()
