"""The simulator's state as one JSON file (``bank.json``) in a caller-given directory.

Money is stored as decimal strings; the file is replaced atomically on save.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

from banksim.bank import Bank, BankError, Booking, SubAccount
from shared.money import format_fen, parse_fen

STATE_FILE = "bank.json"
FORMAT_VERSION = 1


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def init(
    directory: Path, master_account: str = "MASTER0001", fee_account: str = "SUBFEE0001"
) -> Bank:
    """Create a fresh bank in ``directory``; refuses to overwrite an existing one."""
    path = state_path(directory)
    if path.exists():
        raise BankError(f"{path} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    bank = Bank(master_account=master_account, fee_account=fee_account)
    save(bank, directory)
    return bank


def to_json(bank: Bank) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "master_account": bank.master_account,
        "fee_account": bank.fee_account,
        "accounts": [
            {
                "account": a.account,
                "member_id": a.member_id,
                "opened_on": a.opened_on.isoformat() if a.opened_on else None,
            }
            for a in sorted(bank.accounts.values(), key=lambda a: a.account)
        ],
        "bookings": [
            {
                "business_date": b.business_date.isoformat(),
                "account": b.account,
                "kind": b.kind,
                "reference": b.reference,
                "direction": b.direction,
                "amount": format_fen(b.amount_fen),
            }
            for b in bank.bookings
        ],
        "applied": sorted(bank.applied),
    }


def from_json(data: dict[str, Any]) -> Bank:
    if data.get("version") != FORMAT_VERSION:
        raise BankError(f"unsupported state version {data.get('version')!r}")
    accounts = {
        a["account"]: SubAccount(
            a["account"],
            a["member_id"],
            date.fromisoformat(a["opened_on"]) if a["opened_on"] else None,
        )
        for a in data["accounts"]
    }
    bookings = [
        Booking(
            date.fromisoformat(b["business_date"]),
            b["account"],
            b["kind"],
            b["reference"],
            b["direction"],
            parse_fen(b["amount"]),
        )
        for b in data["bookings"]
    ]
    return Bank(
        master_account=data["master_account"],
        fee_account=data["fee_account"],
        accounts=accounts,
        bookings=bookings,
        applied=set(data["applied"]),
    )


def load(directory: Path) -> Bank:
    path = state_path(directory)
    if not path.exists():
        raise BankError(f"no bank in {directory}: run init first")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return from_json(data)


def save(bank: Bank, directory: Path) -> None:
    path = state_path(directory)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(bank), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
