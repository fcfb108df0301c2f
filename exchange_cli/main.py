"""`exchange`: the one command operators run by hand.

Each command imports what it needs when it runs: the staff commands that only call a
service over HTTP (``eod run``, ``recon load``) then start without loading SQLAlchemy,
Alembic or the services' code.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from banksim.cli import app as bank_simulator_app
from exchange_cli.dead_letters import app as dlq_app
from services.clearing.cli import eod_app, recon_app
from services.custody.cli import app as ledger_app

if TYPE_CHECKING:
    from shared.config import CommonSettings

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
app.add_typer(dlq_app, name="dlq")

console = Console(highlight=False)


def _ensure_infra(settings: CommonSettings) -> None:
    from exchange_cli import infra

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
    from shared.config import CommonSettings

    settings = CommonSettings()
    _ensure_infra(settings)
    console.print("PostgreSQL and RabbitMQ are reachable")


@db_app.command("migrate")
def db_migrate() -> None:
    """Create the database if needed and bring every service's schema up to date."""
    from shared.config import CommonSettings
    from shared.migrations import ensure_database, upgrade_all

    settings = CommonSettings()
    created = asyncio.run(ensure_database(settings.database_url))
    upgrade_all(settings.database_url)
    console.print(("created and " if created else "") + "migrated every service schema")


@app.command("run")
def run(
    ready_timeout: float = typer.Option(
        90.0, help="Seconds to wait for every service to be ready."
    ),
    demo: bool = typer.Option(True, help="Seed the demo market once every service is ready."),
) -> None:
    """Start the whole system in the foreground: check infrastructure, migrate, run all four
    services, seed the demo market, and print the URLs and credentials. Ctrl-C stops
    everything."""
    from exchange_cli import demo as demo_market
    from exchange_cli.supervisor import run_services
    from services.gateway.settings import GatewaySettings
    from shared.migrations import upgrade_all

    settings = GatewaySettings()
    _ensure_infra(settings)
    upgrade_all(settings.database_url)
    console.print("database migrated; starting services")

    def seed_demo() -> None:
        try:
            state = demo_market.seed(settings.url_of("gateway"), settings.admin_token, console)
        except Exception as exc:  # the services keep running; say what went wrong
            console.print(f"[red]demo seed failed: {exc}[/red]")
            return
        demo_market.print_credentials(console, state, settings.admin_token)

    on_ready = seed_demo if demo else None
    raise typer.Exit(code=run_services(settings, ready_timeout=ready_timeout, on_ready=on_ready))


demo_app = typer.Typer(help="The demo market.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@demo_app.command("seed")
def demo_seed() -> None:
    """Seed the demo market through the public API of a running gateway."""
    from exchange_cli import demo as demo_market
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    state = demo_market.seed(settings.url_of("gateway"), settings.admin_token, console)
    demo_market.print_credentials(console, state, settings.admin_token)


if __name__ == "__main__":
    app()
