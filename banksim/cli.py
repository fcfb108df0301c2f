"""``exchange bank ...``: drive the custody bank simulator from the command line.

Faults are injected with repeatable ``--inject KIND:ARG`` options:

* ``apply``: ``skip:REF`` (do not book that instruction), ``amount:REF=12.34``
  (book that instruction with another amount);
* ``statement``: ``unknown-account:SUB=0.00`` (a sub-account the exchange does
  not know), ``drop-account:SUB`` (leave a sub-account out), ``unsolicited:SUB=1.00``
  (the bank books a credit of its own on SUB that day; ``-1.00`` for a debit),
  ``master-offset:1.00`` (master closing balance ≠ Σ subs).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from banksim import store
from banksim.bank import BankError, StatementInjection
from shared.money import MoneyError, parse_fen

app = typer.Typer(help="Custody bank simulator (资金存管银行).", no_args_is_help=True)

DirOption = Annotated[
    Path, typer.Option("--dir", envvar="BANKSIM_DIR", help="Directory holding bank.json.")
]
InjectOption = Annotated[
    list[str] | None, typer.Option("--inject", help="KIND:ARG, repeatable (see module help).")
]


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a YYYY-MM-DD date") from exc


def _fen(text: str, *, allow_negative: bool = False) -> int:
    try:
        return parse_fen(text, allow_negative=allow_negative)
    except MoneyError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _pair(arg: str) -> tuple[str, str]:
    key, sep, value = arg.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{arg!r}: expected NAME=AMOUNT")
    return key, value


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@app.command()
def init(
    directory: DirOption,
    master: Annotated[str, typer.Option(help="Master account number.")] = "MASTER0001",
    fee_account: Annotated[str, typer.Option(help="Fee income sub-account.")] = "SUBFEE0001",
) -> None:
    """Create an empty bank."""
    try:
        store.init(directory, master, fee_account)
    except BankError as exc:
        raise _fail(exc) from exc
    typer.echo(f"bank initialised in {directory} (master {master}, fee {fee_account})")


@app.command("open-account")
def open_account(
    directory: DirOption,
    account: Annotated[str, typer.Argument(help="Sub-account number.")],
    member_id: Annotated[str | None, typer.Argument(help="Owning member.")] = None,
    opened_on: Annotated[str | None, typer.Option("--date")] = None,
) -> None:
    """Open a member sub-account (idempotent)."""
    try:
        bank = store.load(directory)
        bank.open_account(account, member_id, _date(opened_on) if opened_on else None)
        store.save(bank, directory)
    except BankError as exc:
        raise _fail(exc) from exc
    typer.echo(f"sub-account {account} open")


@app.command()
def deposit(
    directory: DirOption,
    business_date: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    account: Annotated[str, typer.Argument()],
    amount: Annotated[str, typer.Argument(help="Decimal, e.g. 5000.00")],
    reference: Annotated[str, typer.Argument(help="Bank reference.")],
) -> None:
    """Book a deposit notice (a repeated reference books nothing)."""
    try:
        bank = store.load(directory)
        booked = bank.deposit(_date(business_date), account, _fen(amount), reference)
        store.save(bank, directory)
    except BankError as exc:
        raise _fail(exc) from exc
    typer.echo(f"deposit {reference}: {'booked' if booked else 'already booked'}")


@app.command()
def apply(
    directory: DirOption,
    file: Annotated[Path, typer.Argument(help="Settlement instruction file.")],
    inject: InjectOption = None,
) -> None:
    """Book an instruction file (rows already booked are left alone)."""
    skip: list[str] = []
    overrides: dict[str, int] = {}
    for item in inject or []:
        kind, _, arg = item.partition(":")
        if kind == "skip" and arg:
            skip.append(arg)
        elif kind == "amount":
            ref, value = _pair(arg)
            overrides[ref] = _fen(value)
        else:
            raise typer.BadParameter(f"apply does not know the injection {item!r}")
    try:
        bank = store.load(directory)
        result = bank.apply_instructions(
            file.read_text(encoding="utf-8"), skip_references=skip, amount_overrides=overrides
        )
        store.save(bank, directory)
    except BankError as exc:
        raise _fail(exc) from exc
    typer.echo(
        f"booked {len(result.booked)}, already booked {len(result.already_applied)},"
        f" skipped {len(result.skipped)}"
    )


@app.command()
def statement(
    directory: DirOption,
    business_date: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    output: Annotated[Path | None, typer.Option("--out", help="File; stdout if absent.")] = None,
    inject: InjectOption = None,
) -> None:
    """Write the statement file of a business date."""
    day = _date(business_date)
    unknown: dict[str, int] = {}
    drop: set[str] = set()
    offset = 0
    unsolicited: list[tuple[str, int]] = []
    for item in inject or []:
        kind, _, arg = item.partition(":")
        if kind == "unknown-account":
            acc, value = _pair(arg) if "=" in arg else (arg, "0.00")
            unknown[acc] = _fen(value)
        elif kind == "drop-account" and arg:
            drop.add(arg)
        elif kind == "master-offset":
            offset += _fen(arg, allow_negative=True)
        elif kind == "unsolicited":
            acc, value = _pair(arg)
            unsolicited.append((acc, _fen(value, allow_negative=True)))
        else:
            raise typer.BadParameter(f"statement does not know the injection {item!r}")
    try:
        bank = store.load(directory)
        for acc, fen in unsolicited:
            if fen == 0:
                raise BankError("an unsolicited movement needs a non-zero amount")
            bank.book_unsolicited(day, acc, "CREDIT" if fen > 0 else "DEBIT", abs(fen))
        text = bank.statement(
            day,
            StatementInjection(
                unknown_accounts=unknown, drop_accounts=frozenset(drop), master_offset_fen=offset
            ),
        )
        store.save(bank, directory)
    except BankError as exc:
        raise _fail(exc) from exc
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"statement of {day} written to {output}")
