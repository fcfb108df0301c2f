"""`exchange eod run` and `exchange recon load`: staff commands that call the clearing
service over HTTP (``settings.url_of("clearing")``)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.clearing.phases import PHASES
from shared.config import CommonSettings

eod_app = typer.Typer(help="End-of-day settlement (日终清算).", no_args_is_help=True)
recon_app = typer.Typer(
    help="Reconciliation with the bank's statement (对账).", no_args_is_help=True
)
console = Console(highlight=False)

DateOption = Annotated[str, typer.Option("--date", help="Business date, YYYY-MM-DD.")]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a YYYY-MM-DD date") from exc


def _client() -> httpx.Client:
    return httpx.Client(base_url=CommonSettings().url_of("clearing"), timeout=60)


def _fail(response: httpx.Response) -> typer.Exit:
    try:
        body = response.json()
        message = f"{body.get('code')}: {body.get('detail')}"
    except ValueError:
        message = response.text[:500]
    console.print(f"[red]clearing refused ({response.status_code}) {message}[/red]")
    return typer.Exit(code=1)


@eod_app.command("run")
def eod_run(
    business_date: DateOption,
    poll: Annotated[float, typer.Option(help="Seconds between progress polls.")] = 0.5,
) -> None:
    """Roll the business date and settle it; show each phase's progress until settled."""
    day = _date(business_date)
    with _client() as client:
        response = client.post("/internal/eod", json={"business_date": day.isoformat()})
        if response.status_code != 202:
            raise _fail(response)
        run: dict[str, Any] = response.json()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            overall = progress.add_task(f"EOD {day}", total=len(PHASES))
            phase_task = progress.add_task("phase", total=1)
            while True:
                phase = run["phase"]
                done = PHASES.index(phase) if phase in PHASES else len(PHASES)
                progress.update(overall, completed=done, description=f"EOD {day}: {run['status']}")
                counts = run["progress"]
                progress.update(
                    phase_task,
                    description=f"phase {phase}",
                    completed=counts["done"],
                    total=max(counts["total"], 1),
                )
                if run["status"] != "running":
                    break
                time.sleep(poll)
                response = client.get(f"/internal/eod/{day.isoformat()}")
                if response.status_code != 200:
                    raise _fail(response)
                run = response.json()
    if run["status"] == "failed":
        console.print(f"[red]EOD {day} failed: {run.get('error')}[/red]")
        raise typer.Exit(code=1)
    console.print(
        f"EOD {day}: [green]{run['status']}[/green], {run['trade_count']} trades, "
        f"fees {run['fee_total']}"
    )


@recon_app.command("load")
def recon_load(
    file: Annotated[Path, typer.Argument(help="The bank's statement file (CSV).")],
    business_date: DateOption,
) -> None:
    """Load the bank's statement for a date and print the reconciliation report."""
    day = _date(business_date)
    content = file.read_bytes()
    with _client() as client:
        response = client.post(
            f"/internal/reconciliations/{day.isoformat()}",
            content=content,
            headers={"Content-Type": "text/csv"},
        )
    if response.status_code != 201:
        raise _fail(response)
    report = response.json()
    tt, ts = report["total_total"], report["total_sub"]
    console.print(
        f"总总 exchange {tt['exchange_value']} vs bank {tt['bank_value']}: "
        f"{'ok' if tt['balanced'] else 'BREAK'}"
    )
    console.print(
        f"总分 master {ts['master_value']} vs subs {ts['sum_of_subs']}: "
        f"{'ok' if ts['balanced'] else 'BREAK'}"
    )
    breaks = [("分分", b) for b in report["sub_sub"]["breaks"]] + [
        ("movement", b) for b in report["movements"]["breaks"]
    ]
    console.print(
        f"分分 checked {report['sub_sub']['checked']}, movements matched "
        f"{report['movements']['matched']}"
    )
    if breaks:
        table = Table(title=f"breaks of {day}")
        for column in ("level", "kind", "account", "member", "reference", "exchange", "bank"):
            table.add_column(column)
        for level, b in breaks:
            table.add_row(
                level,
                b["kind"],
                b["account"],
                b.get("member_id") or "",
                b.get("reference") or "",
                b.get("exchange_value") or "-",
                b.get("bank_value") or "-",
            )
        console.print(table)
    color = "green" if report["status"] == "balanced" else "red"
    console.print(f"reconciliation of {day}: [{color}]{report['status']}[/{color}]")
    if report["status"] != "balanced":
        raise typer.Exit(code=3)
