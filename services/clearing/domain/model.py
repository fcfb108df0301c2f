"""Value types shared by netting, the bank files and reconciliation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from shared.money import check_fen


class Direction(StrEnum):
    """Direction of a movement from the sub-account's point of view."""

    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


class InstructionKind(StrEnum):
    TRADE_NET = "TRADE_NET"
    FEE = "FEE"
    WITHDRAWAL = "WITHDRAWAL"


class MovementKind(StrEnum):
    """Kinds of movement a bank statement may carry."""

    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    TRADE_NET = "TRADE_NET"
    FEE = "FEE"
    #: A booking the bank made on its own (correction, interest, ...).
    ADJUSTMENT = "ADJUSTMENT"


def signed_fen(direction: Direction, amount_fen: int) -> int:
    """CREDIT is positive, DEBIT negative (the sub-account's point of view)."""
    return amount_fen if direction is Direction.CREDIT else -amount_fen


@dataclass(frozen=True, slots=True)
class Instruction:
    """One row of the settlement instruction file (清算文件)."""

    business_date: date
    seq: int
    sub_account: str
    member_id: str | None
    direction: Direction
    amount_fen: int
    kind: InstructionKind
    reference: str

    def __post_init__(self) -> None:
        check_fen(self.amount_fen)
        if self.amount_fen <= 0:
            raise ValueError(f"instruction {self.reference}: amount must be positive")
        if self.seq < 1:
            raise ValueError(f"instruction {self.reference}: seq must be >= 1")

    @property
    def signed_fen(self) -> int:
        return signed_fen(self.direction, self.amount_fen)
