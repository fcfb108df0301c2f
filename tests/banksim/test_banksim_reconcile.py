"""End to end through the bank simulator: clean day, then each injected break.

The exchange side is written out by hand below (balances computed on paper from the
scenario), never by the netting or reconciliation code under test.

Scenario, business date 2026-11-20:
* 2026-11-19: m_d deposits 500.00 (SUBD) and does nothing on D.
* D: deposits m_a 100,000.00 (BK-A), m_b 20,000.00 (BK-B), m_c 5,000.00 (BK-C).
* t1: m_a buys 600 P1 @ 100.00 from m_b = 60,000.00; fees 5.00 / 5.00.
* t2: m_c buys 10 P1 @ 100.00 from m_b's same order = 1,000.00; fees 2.00 / 0.00 (cap).
* w_c1: m_c withdraws 300.00.
End of D: m_a 39,995.00; m_b 80,995.00; m_c 3,698.00; m_d 500.00; fees 12.00;
total in custody 125,200.00 (= deposits 125,500.00 − withdrawal 300.00).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from banksim.bank import Bank, StatementInjection
from services.clearing.domain.bank_files import parse_statement, write_instruction_file
from services.clearing.domain.model import Direction, MovementKind
from services.clearing.domain.netting import Trade, Withdrawal, net_settlement
from services.clearing.domain.reconciliation import (
    ExchangeMovement,
    ExchangeSide,
    ExchangeSubAccount,
    reconcile,
)

D = date(2026, 11, 20)
SUBS = {"m_a": "SUBA", "m_b": "SUBB", "m_c": "SUBC", "m_d": "SUBD"}

EXCHANGE_BALANCES = [
    ("SUBA", "m_a", 39_995_00),
    ("SUBB", "m_b", 80_995_00),
    ("SUBC", "m_c", 3_698_00),
    ("SUBD", "m_d", 500_00),
    ("SUBFEE0001", None, 12_00),
]
EXCHANGE_TOTAL = 125_200_00
EXCHANGE_MOVEMENTS = [
    ("BK-A", "SUBA", "m_a", "DEPOSIT", "CREDIT", 100_000_00),
    ("BK-B", "SUBB", "m_b", "DEPOSIT", "CREDIT", 20_000_00),
    ("BK-C", "SUBC", "m_c", "DEPOSIT", "CREDIT", 5_000_00),
    ("D20261120-TN-m_a", "SUBA", "m_a", "TRADE_NET", "DEBIT", 60_000_00),
    ("D20261120-TN-m_b", "SUBB", "m_b", "TRADE_NET", "CREDIT", 61_000_00),
    ("D20261120-TN-m_c", "SUBC", "m_c", "TRADE_NET", "DEBIT", 1_000_00),
    ("D20261120-FE-m_a", "SUBA", "m_a", "FEE", "DEBIT", 5_00),
    ("D20261120-FE-m_b", "SUBB", "m_b", "FEE", "DEBIT", 5_00),
    ("D20261120-FE-m_c", "SUBC", "m_c", "FEE", "DEBIT", 2_00),
    ("D20261120-FE-EXCHANGE", "SUBFEE0001", None, "FEE", "CREDIT", 12_00),
    ("w_c1", "SUBC", "m_c", "WITHDRAWAL", "DEBIT", 300_00),
]


def exchange_side() -> ExchangeSide:
    return ExchangeSide(
        sub_accounts=tuple(ExchangeSubAccount(a, m, v) for a, m, v in EXCHANGE_BALANCES),
        total_fen=EXCHANGE_TOTAL,
        movements=tuple(
            ExchangeMovement(r, a, m, MovementKind(k), Direction(d), v)
            for r, a, m, k, d, v in EXCHANGE_MOVEMENTS
        ),
    )


def instruction_file() -> str:
    trades = [
        Trade("t1", "P1", 100_00, 600, 60_000_00, "m_a", "m_b", 5_00, 5_00),
        Trade("t2", "P1", 100_00, 10, 1_000_00, "m_c", "m_b", 2_00, 0),
    ]
    s = net_settlement(D, trades, [Withdrawal("w_c1", "m_c", 300_00)], SUBS, "SUBFEE0001")
    return write_instruction_file(D, s.instructions)


def bank_before_settlement() -> Bank:
    bank = Bank()
    for member, sub in SUBS.items():
        bank.open_account(sub, member)
    assert bank.deposit(date(2026, 11, 19), "SUBD", 500_00, "BK-D")
    assert bank.deposit(D, "SUBA", 100_000_00, "BK-A")
    assert bank.deposit(D, "SUBB", 20_000_00, "BK-B")
    assert bank.deposit(D, "SUBC", 5_000_00, "BK-C")
    return bank


def run(
    *,
    skip: tuple[str, ...] = (),
    overrides: dict[str, int] | None = None,
    inject: StatementInjection | None = None,
    bank: Bank | None = None,
) -> dict[str, Any]:
    bank = bank or bank_before_settlement()
    bank.apply_instructions(instruction_file(), skip_references=skip, amount_overrides=overrides)
    statement = parse_statement(bank.statement(D, inject), expected_date=D)
    return reconcile(D, exchange_side(), statement).to_dict()


def clean_levels(report: dict[str, Any], **changes: Any) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "business_date": "2026-11-20",
        "status": "breaks",
        "total_total": {"exchange_value": "125200.00", "bank_value": "125200.00", "balanced": True},
        "total_sub": {"master_value": "125200.00", "sum_of_subs": "125200.00", "balanced": True},
        "sub_sub": {"checked": 5, "breaks": []},
        "movements": {"matched": 11, "breaks": []},
    }
    expected.update(changes)
    return expected


def test_clean_day_reconciles() -> None:
    report = run()
    assert report == {**clean_levels(report), "status": "balanced"}


def test_clean_statement_balances() -> None:
    bank = bank_before_settlement()
    bank.apply_instructions(instruction_file())
    st = parse_statement(bank.statement(D))
    assert [(b.account, b.opening_fen, b.closing_fen) for b in st.balances] == [
        ("MASTER0001", 500_00, 125_200_00),
        ("SUBA", 0, 39_995_00),
        ("SUBB", 0, 80_995_00),
        ("SUBC", 0, 3_698_00),
        ("SUBD", 500_00, 500_00),
        ("SUBFEE0001", 0, 12_00),
    ]
    assert len(st.movements) == 11


def test_applying_twice_and_next_day_activity_change_nothing() -> None:
    bank = bank_before_settlement()
    bank.apply_instructions(instruction_file())
    again = bank.apply_instructions(instruction_file())
    assert again.booked == ()
    assert len(again.already_applied) == 8
    assert not bank.deposit(D, "SUBA", 100_000_00, "BK-A")
    # D+1 activity before D's statement is written
    bank.deposit(date(2026, 11, 21), "SUBA", 7_00, "BK-NEXT")
    bank.book_unsolicited(date(2026, 11, 21), "SUBB", "CREDIT", 1_00)
    report = run(bank=bank)
    assert report["status"] == "balanced"


def test_skipped_trade_net() -> None:
    report = run(skip=("D20261120-TN-m_c",))
    assert report == clean_levels(
        report,
        # the bank booked one side of an internal transfer only: master ≠ Σ subs
        total_sub={"master_value": "125200.00", "sum_of_subs": "126200.00", "balanced": False},
        sub_sub={"checked": 5, "breaks": [
            {"kind": "AMOUNT_MISMATCH", "account": "SUBC", "member_id": "m_c",
             "exchange_value": "3698.00", "bank_value": "4698.00"},
        ]},
        movements={"matched": 10, "breaks": [
            {"kind": "MISSING_AT_BANK", "reference": "D20261120-TN-m_c", "account": "SUBC",
             "member_id": "m_c", "exchange_value": "-1000.00", "bank_value": None},
        ]},
    )  # fmt: skip


def test_skipped_withdrawal() -> None:
    report = run(skip=("w_c1",))
    assert report == clean_levels(
        report,
        # the money never left custody: the bank's master is 300.00 above the exchange total
        total_total={"exchange_value": "125200.00", "bank_value": "125500.00", "balanced": False},
        total_sub={"master_value": "125500.00", "sum_of_subs": "125500.00", "balanced": True},
        sub_sub={"checked": 5, "breaks": [
            {"kind": "AMOUNT_MISMATCH", "account": "SUBC", "member_id": "m_c",
             "exchange_value": "3698.00", "bank_value": "3998.00"},
        ]},
        movements={"matched": 10, "breaks": [
            {"kind": "MISSING_AT_BANK", "reference": "w_c1", "account": "SUBC",
             "member_id": "m_c", "exchange_value": "-300.00", "bank_value": None},
        ]},
    )  # fmt: skip


def test_wrong_amount_booked() -> None:
    report = run(overrides={"D20261120-TN-m_b": 61_000_01})
    assert report == clean_levels(
        report,
        total_sub={"master_value": "125200.00", "sum_of_subs": "125200.01", "balanced": False},
        sub_sub={"checked": 5, "breaks": [
            {"kind": "AMOUNT_MISMATCH", "account": "SUBB", "member_id": "m_b",
             "exchange_value": "80995.00", "bank_value": "80995.01"},
        ]},
        movements={"matched": 10, "breaks": [
            {"kind": "AMOUNT_MISMATCH", "reference": "D20261120-TN-m_b", "account": "SUBB",
             "member_id": "m_b", "exchange_value": "61000.00", "bank_value": "61000.01"},
        ]},
    )  # fmt: skip


def test_unknown_sub_account_with_no_money() -> None:
    report = run(inject=StatementInjection(unknown_accounts={"SUBX": 0}))
    assert report == clean_levels(
        report,
        sub_sub={"checked": 6, "breaks": [
            {"kind": "UNKNOWN_AT_EXCHANGE", "account": "SUBX", "member_id": None,
             "exchange_value": None, "bank_value": "0.00"},
        ]},
    )  # fmt: skip


def test_unknown_sub_account_holding_money() -> None:
    report = run(inject=StatementInjection(unknown_accounts={"SUBX": 10_00}))
    assert report == clean_levels(
        report,
        total_total={"exchange_value": "125200.00", "bank_value": "125210.00", "balanced": False},
        total_sub={"master_value": "125210.00", "sum_of_subs": "125210.00", "balanced": True},
        sub_sub={"checked": 6, "breaks": [
            {"kind": "UNKNOWN_AT_EXCHANGE", "account": "SUBX", "member_id": None,
             "exchange_value": None, "bank_value": "10.00"},
        ]},
    )  # fmt: skip


def test_sub_account_dropped_from_statement() -> None:
    report = run(inject=StatementInjection(drop_accounts=frozenset({"SUBD"})))
    assert report == clean_levels(
        report,
        total_sub={"master_value": "125200.00", "sum_of_subs": "124700.00", "balanced": False},
        sub_sub={"checked": 5, "breaks": [
            {"kind": "MISSING_AT_BANK", "account": "SUBD", "member_id": "m_d",
             "exchange_value": "500.00", "bank_value": None},
        ]},
    )  # fmt: skip


def test_unsolicited_bank_movement() -> None:
    bank = bank_before_settlement()
    reference = bank.book_unsolicited(D, "SUBA", "CREDIT", 1_00)
    report = run(bank=bank)
    assert report == clean_levels(
        report,
        total_total={"exchange_value": "125200.00", "bank_value": "125201.00", "balanced": False},
        total_sub={"master_value": "125201.00", "sum_of_subs": "125201.00", "balanced": True},
        sub_sub={"checked": 5, "breaks": [
            {"kind": "AMOUNT_MISMATCH", "account": "SUBA", "member_id": "m_a",
             "exchange_value": "39995.00", "bank_value": "39996.00"},
        ]},
        movements={"matched": 11, "breaks": [
            {"kind": "MISSING_AT_EXCHANGE", "reference": reference, "account": "SUBA",
             "member_id": "m_a", "exchange_value": None, "bank_value": "1.00"},
        ]},
    )  # fmt: skip


def test_master_differs_from_sum_of_subs() -> None:
    report = run(inject=StatementInjection(master_offset_fen=1_00))
    assert report == clean_levels(
        report,
        total_total={"exchange_value": "125200.00", "bank_value": "125201.00", "balanced": False},
        total_sub={"master_value": "125201.00", "sum_of_subs": "125200.00", "balanced": False},
    )


@pytest.mark.parametrize("skip", ["D20261120-FE-EXCHANGE", "D20261120-FE-m_a"])
def test_each_skipped_fee_row_is_one_movement_break(skip: str) -> None:
    report = run(skip=(skip,))
    assert [b["reference"] for b in report["movements"]["breaks"]] == [skip]
    assert len(report["sub_sub"]["breaks"]) == 1
