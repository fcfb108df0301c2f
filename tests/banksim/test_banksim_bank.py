"""The bank simulator's own behaviour: accounts, idempotency, atomic apply, state, CLI."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from banksim import store
from banksim.bank import Bank, BankError
from banksim.cli import app

D = date(2026, 11, 20)

FILE = """\
business_date,seq,sub_account,member_id,direction,amount,kind,reference
2026-11-20,1,SUB1,m_1,DEBIT,100.00,TRADE_NET,D20261120-TN-m_1
2026-11-20,2,SUB2,m_2,CREDIT,100.00,TRADE_NET,D20261120-TN-m_2
2026-11-20,3,SUB1,m_1,DEBIT,50.00,WITHDRAWAL,w_1
#TOTAL,3,150.00,100.00
"""


def bank() -> Bank:
    b = Bank()
    b.open_account("SUB1", "m_1")
    b.open_account("SUB2", "m_2")
    b.deposit(D, "SUB1", 1_000_00, "BK1")
    return b


def test_defaults_and_fee_account() -> None:
    b = Bank()
    assert (b.master_account, b.fee_account) == ("MASTER0001", "SUBFEE0001")
    assert b.accounts["SUBFEE0001"].member_id is None


def test_open_account_is_idempotent_and_refuses_another_owner() -> None:
    b = bank()
    b.open_account("SUB1", "m_1")
    with pytest.raises(BankError, match="belongs"):
        b.open_account("SUB1", "m_9")
    with pytest.raises(BankError, match="master"):
        b.open_account("MASTER0001", "m_9")


def test_deposit_once_per_reference() -> None:
    b = bank()
    assert not b.deposit(D, "SUB1", 1_000_00, "BK1")
    assert b.balance_fen("SUB1", D) == 1_000_00
    assert b.balance_fen("MASTER0001", D) == 1_000_00
    with pytest.raises(BankError, match="no sub-account"):
        b.deposit(D, "SUB9", 1, "BK9")


def test_apply_books_subs_and_withdrawal_on_master() -> None:
    b = bank()
    result = b.apply_instructions(FILE)
    assert len(result.booked) == 3
    assert b.balance_fen("SUB1", D) == 850_00
    assert b.balance_fen("SUB2", D) == 100_00
    assert b.balance_fen("MASTER0001", D) == 950_00


def test_apply_unknown_account_books_nothing() -> None:
    b = Bank()
    b.open_account("SUB1", "m_1")
    with pytest.raises(BankError, match="SUB2"):
        b.apply_instructions(FILE)
    assert [x.reference for x in b.bookings] == []


@pytest.mark.parametrize(
    "bad",
    [
        FILE.replace("#TOTAL,3,150.00,100.00", "#TOTAL,3,150.00,100.01"),
        FILE.replace("#TOTAL,3,150.00,100.00\n", ""),
        FILE.replace("2026-11-20,2,", "2026-11-20,7,"),
        FILE.replace("business_date,", "date,"),
    ],
)
def test_apply_refuses_malformed_files(bad: str) -> None:
    with pytest.raises(BankError):
        bank().apply_instructions(bad)


def test_injection_must_name_a_row_of_the_file() -> None:
    with pytest.raises(BankError, match="not in the file"):
        bank().apply_instructions(FILE, skip_references=["nope"])


def test_skipped_row_can_be_booked_later() -> None:
    b = bank()
    assert b.apply_instructions(FILE, skip_references=["w_1"]).skipped == ("w_1",)
    assert b.apply_instructions(FILE).booked == ("w_1",)


def test_state_round_trip(tmp_path: Path) -> None:
    b = bank()
    b.apply_instructions(FILE)
    store.save(b, tmp_path)
    loaded = store.load(tmp_path)
    assert loaded == b
    assert loaded.statement(D) == b.statement(D)


def test_cli_session(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "bank")

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    ok("init", "--dir", d)
    assert runner.invoke(app, ["init", "--dir", d]).exit_code == 1
    ok("open-account", "--dir", d, "SUB1", "m_1")
    ok("open-account", "--dir", d, "SUB2", "m_2")
    assert "booked" in ok("deposit", "--dir", d, "2026-11-20", "SUB1", "1000.00", "BK1")
    assert "already" in ok("deposit", "--dir", d, "2026-11-20", "SUB1", "1000.00", "BK1")
    file = tmp_path / "i.csv"
    file.write_text(FILE, encoding="utf-8")
    assert "skipped 1" in ok("apply", "--dir", d, str(file), "--inject", "skip:w_1",
                             "--inject", "amount:D20261120-TN-m_2=100.01")  # fmt: skip
    out = tmp_path / "s.csv"
    ok("statement", "--dir", d, "2026-11-20", "--out", str(out), "--inject", "unknown-account:SUBX",
       "--inject", "drop-account:SUBFEE0001", "--inject", "master-offset:0.50",
       "--inject", "unsolicited:SUB2=-0.01")  # fmt: skip
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[1] == "B,2026-11-20,MASTER0001,MASTER,,,,,,0.00,1000.49"
    assert "B,2026-11-20,SUB2,SUB,m_2,,,,,0.00,100.00" in lines
    assert "B,2026-11-20,SUBX,SUB,,,,,,0.00,0.00" in lines
    assert not any("SUBFEE0001" in line for line in lines)
    assert "M,2026-11-20,SUB2,SUB,m_2,TRADE_NET,D20261120-TN-m_2,CREDIT,100.01,," in lines
    assert runner.invoke(app, ["apply", "--dir", d, str(file), "--inject", "bogus"]).exit_code != 0
