"""Reconciliation edge cases on hand-built statements."""

from __future__ import annotations

import json
from datetime import date

import pytest

from services.clearing.domain.bank_files import (
    AccountType,
    BankStatement,
    StatementBalance,
    StatementMovement,
)
from services.clearing.domain.model import Direction, MovementKind
from services.clearing.domain.reconciliation import (
    ExchangeMovement,
    ExchangeSide,
    ExchangeSubAccount,
    reconcile,
)

D = date(2026, 11, 20)
CR, DR = Direction.CREDIT, Direction.DEBIT
SUB = AccountType.SUB


def statement(movements: tuple[StatementMovement, ...], sub_a: int = 100_00) -> BankStatement:
    return BankStatement(
        D,
        (
            StatementBalance("M1", AccountType.MASTER, None, 0, sub_a + 50_00),
            StatementBalance("SUBA", SUB, "m_a", 0, sub_a),
            StatementBalance("SUBB", SUB, "m_b", 0, 50_00),
        ),
        movements,
    )


EXCHANGE = ExchangeSide(
    sub_accounts=(
        ExchangeSubAccount("SUBA", "m_a", 100_00),
        ExchangeSubAccount("SUBB", "m_b", 50_00),
    ),
    total_fen=150_00,
    movements=(
        ExchangeMovement("BK1", "SUBA", "m_a", MovementKind.DEPOSIT, CR, 100_00),
        ExchangeMovement("BK2", "SUBB", "m_b", MovementKind.DEPOSIT, CR, 50_00),
    ),
)


def test_balanced_report_is_json_ready() -> None:
    st = statement((
        StatementMovement("SUBA", SUB, "m_a", MovementKind.DEPOSIT, "BK1", CR, 100_00),
        StatementMovement("SUBB", SUB, "m_b", MovementKind.DEPOSIT, "BK2", CR, 50_00),
    ))  # fmt: skip
    report = reconcile(D, EXCHANGE, st)
    assert report.balanced
    assert json.loads(json.dumps(report.to_dict())) == {
        "business_date": "2026-11-20",
        "status": "balanced",
        "total_total": {"exchange_value": "150.00", "bank_value": "150.00", "balanced": True},
        "total_sub": {"master_value": "150.00", "sum_of_subs": "150.00", "balanced": True},
        "sub_sub": {"checked": 2, "breaks": []},
        "movements": {"matched": 2, "breaks": []},
    }


def test_wrong_direction_is_an_amount_mismatch_with_signs() -> None:
    st = statement((
        StatementMovement("SUBA", SUB, "m_a", MovementKind.DEPOSIT, "BK1", DR, 100_00),
        StatementMovement("SUBB", SUB, "m_b", MovementKind.DEPOSIT, "BK2", CR, 50_00),
    ))  # fmt: skip
    breaks = reconcile(D, EXCHANGE, st).to_dict()["movements"]
    assert breaks == {"matched": 1, "breaks": [
        {"kind": "AMOUNT_MISMATCH", "reference": "BK1", "account": "SUBA", "member_id": "m_a",
         "exchange_value": "100.00", "bank_value": "-100.00"},
    ]}  # fmt: skip


def test_booked_on_another_account_is_missing_on_one_and_extra_on_the_other() -> None:
    st = statement((
        StatementMovement("SUBB", SUB, "m_b", MovementKind.DEPOSIT, "BK1", CR, 100_00),
        StatementMovement("SUBB", SUB, "m_b", MovementKind.DEPOSIT, "BK2", CR, 50_00),
    ))  # fmt: skip
    breaks = reconcile(D, EXCHANGE, st).movements.to_dict()["breaks"]
    assert breaks == [
        {"kind": "MISSING_AT_BANK", "reference": "BK1", "account": "SUBA", "member_id": "m_a",
         "exchange_value": "100.00", "bank_value": None},
        {"kind": "MISSING_AT_EXCHANGE", "reference": "BK1", "account": "SUBB",
         "member_id": "m_b", "exchange_value": None, "bank_value": "100.00"},
    ]  # fmt: skip


def test_double_booking_at_bank_is_summed() -> None:
    st = statement((
        StatementMovement("SUBA", SUB, "m_a", MovementKind.DEPOSIT, "BK1", CR, 100_00),
        StatementMovement("SUBA", SUB, "m_a", MovementKind.DEPOSIT, "BK1", CR, 100_00),
        StatementMovement("SUBB", SUB, "m_b", MovementKind.DEPOSIT, "BK2", CR, 50_00),
    ), sub_a=200_00)  # fmt: skip
    assert reconcile(D, EXCHANGE, st).movements.to_dict()["breaks"] == [
        {"kind": "AMOUNT_MISMATCH", "reference": "BK1", "account": "SUBA", "member_id": "m_a",
         "exchange_value": "100.00", "bank_value": "200.00"},
    ]  # fmt: skip


def test_statement_of_another_day_is_refused() -> None:
    with pytest.raises(ValueError, match="not 2026-11-21"):
        reconcile(date(2026, 11, 21), EXCHANGE, statement(()))


def test_duplicate_exchange_sub_account_is_refused() -> None:
    side = ExchangeSide(
        sub_accounts=(ExchangeSubAccount("SUBA", "m_a", 1), ExchangeSubAccount("SUBA", "m_a", 1)),
        total_fen=2,
        movements=(),
    )
    with pytest.raises(ValueError, match="twice"):
        reconcile(D, side, statement(()))
