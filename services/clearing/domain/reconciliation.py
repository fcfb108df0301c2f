"""Daily reconciliation (对账) of the exchange's books against the bank statement.

Levels: 总总 (exchange total in custody vs bank master closing balance), 总分 (bank
master closing vs sum of the bank's sub-account closings), 分分 (each sub-account's
settled cash vs its bank closing balance) and movements matched by reference.

Decisions where the spec is silent:

* Movements are matched on (reference, account): a movement booked on another
  sub-account than instructed shows as MISSING_AT_BANK on the instructed account
  and MISSING_AT_EXCHANGE on the booked one.
* Movement values are signed from the sub-account's point of view (CREDIT
  positive, DEBIT negative), so a movement booked in the wrong direction is an
  AMOUNT_MISMATCH with opposite signs. Several bank rows with the same reference
  on the same account are summed.
* Movements on the master account are not matched (the exchange keeps none);
  the 总总 and 总分 levels cover the master account.
* ``sub_sub.checked`` counts the distinct sub-accounts on either side;
  ``movements.matched`` counts the (reference, account) pairs that agree.
* ``member_id`` of a break is the exchange's member for that sub-account, and
  null for a sub-account the exchange does not know (and the fee sub-account).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from services.clearing.domain.bank_files import BankStatement
from services.clearing.domain.model import Direction, MovementKind, signed_fen
from shared.money import check_fen, format_fen

# ------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class ExchangeSubAccount:
    """A custody sub-account's settled cash at the end of D (as_of D)."""

    account: str
    #: None for the exchange's fee income sub-account.
    member_id: str | None
    settled_fen: int


@dataclass(frozen=True, slots=True)
class ExchangeMovement:
    """A cash movement of D in the exchange's books, keyed by its bank reference."""

    reference: str
    account: str
    member_id: str | None
    kind: MovementKind
    direction: Direction
    amount_fen: int

    def __post_init__(self) -> None:
        check_fen(self.amount_fen)
        if self.amount_fen <= 0:
            raise ValueError(f"movement {self.reference}: amount must be positive")

    @property
    def signed_fen(self) -> int:
        return signed_fen(self.direction, self.amount_fen)


@dataclass(frozen=True, slots=True)
class ExchangeSide:
    sub_accounts: tuple[ExchangeSubAccount, ...]
    #: The exchange's total cash in custody (members' settled cash plus fee income).
    total_fen: int
    movements: tuple[ExchangeMovement, ...]


# ------------------------------------------------------------------------ outputs


class SubBreakKind(StrEnum):
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    MISSING_AT_BANK = "MISSING_AT_BANK"
    UNKNOWN_AT_EXCHANGE = "UNKNOWN_AT_EXCHANGE"


class MovementBreakKind(StrEnum):
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    MISSING_AT_BANK = "MISSING_AT_BANK"
    MISSING_AT_EXCHANGE = "MISSING_AT_EXCHANGE"


def _fmt(fen: int | None) -> str | None:
    return None if fen is None else format_fen(fen)


@dataclass(frozen=True, slots=True)
class TotalTotal:
    exchange_fen: int
    bank_fen: int

    @property
    def balanced(self) -> bool:
        return self.exchange_fen == self.bank_fen

    def to_dict(self) -> dict[str, object]:
        return {
            "exchange_value": format_fen(self.exchange_fen),
            "bank_value": format_fen(self.bank_fen),
            "balanced": self.balanced,
        }


@dataclass(frozen=True, slots=True)
class TotalSub:
    master_fen: int
    sum_of_subs_fen: int

    @property
    def balanced(self) -> bool:
        return self.master_fen == self.sum_of_subs_fen

    def to_dict(self) -> dict[str, object]:
        return {
            "master_value": format_fen(self.master_fen),
            "sum_of_subs": format_fen(self.sum_of_subs_fen),
            "balanced": self.balanced,
        }


@dataclass(frozen=True, slots=True)
class SubBreak:
    kind: SubBreakKind
    account: str
    member_id: str | None
    exchange_fen: int | None
    bank_fen: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "account": self.account,
            "member_id": self.member_id,
            "exchange_value": _fmt(self.exchange_fen),
            "bank_value": _fmt(self.bank_fen),
        }


@dataclass(frozen=True, slots=True)
class SubSub:
    checked: int
    breaks: tuple[SubBreak, ...]

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "breaks": [b.to_dict() for b in self.breaks]}


@dataclass(frozen=True, slots=True)
class MovementBreak:
    kind: MovementBreakKind
    reference: str
    account: str
    member_id: str | None
    #: Signed: CREDIT positive, DEBIT negative.
    exchange_fen: int | None
    bank_fen: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "reference": self.reference,
            "account": self.account,
            "member_id": self.member_id,
            "exchange_value": _fmt(self.exchange_fen),
            "bank_value": _fmt(self.bank_fen),
        }


@dataclass(frozen=True, slots=True)
class Movements:
    matched: int
    breaks: tuple[MovementBreak, ...]

    def to_dict(self) -> dict[str, object]:
        return {"matched": self.matched, "breaks": [b.to_dict() for b in self.breaks]}


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    business_date: date
    total_total: TotalTotal
    total_sub: TotalSub
    sub_sub: SubSub
    movements: Movements

    @property
    def balanced(self) -> bool:
        return (
            self.total_total.balanced
            and self.total_sub.balanced
            and not self.sub_sub.breaks
            and not self.movements.breaks
        )

    @property
    def status(self) -> str:
        return "balanced" if self.balanced else "breaks"

    def to_dict(self) -> dict[str, object]:
        """The API shape: JSON-ready, money as decimal strings."""
        return {
            "business_date": self.business_date.isoformat(),
            "status": self.status,
            "total_total": self.total_total.to_dict(),
            "total_sub": self.total_sub.to_dict(),
            "sub_sub": self.sub_sub.to_dict(),
            "movements": self.movements.to_dict(),
        }


# -------------------------------------------------------------------------- logic


def reconcile(
    business_date: date, exchange: ExchangeSide, statement: BankStatement
) -> ReconciliationReport:
    """Compare the exchange's end-of-D books with the bank's statement of D."""
    if statement.business_date != business_date:
        raise ValueError(f"statement is for {statement.business_date}, not {business_date}")
    ours = _index_sub_accounts(exchange.sub_accounts)
    bank_subs = {b.account: b for b in statement.sub_balances}
    master = statement.master

    total_total = TotalTotal(exchange_fen=exchange.total_fen, bank_fen=master.closing_fen)
    total_sub = TotalSub(
        master_fen=master.closing_fen,
        sum_of_subs_fen=sum(b.closing_fen for b in bank_subs.values()),
    )

    sub_breaks: list[SubBreak] = []
    for account in sorted(set(ours) | set(bank_subs)):
        mine = ours.get(account)
        theirs = bank_subs.get(account)
        if mine is not None and theirs is None:
            sub_breaks.append(
                SubBreak(
                    SubBreakKind.MISSING_AT_BANK, account, mine.member_id, mine.settled_fen, None
                )
            )
        elif mine is None and theirs is not None:
            sub_breaks.append(
                SubBreak(SubBreakKind.UNKNOWN_AT_EXCHANGE, account, None, None, theirs.closing_fen)
            )
        elif mine is not None and theirs is not None and mine.settled_fen != theirs.closing_fen:
            sub_breaks.append(
                SubBreak(
                    SubBreakKind.AMOUNT_MISMATCH,
                    account,
                    mine.member_id,
                    mine.settled_fen,
                    theirs.closing_fen,
                )
            )
    sub_sub = SubSub(checked=len(set(ours) | set(bank_subs)), breaks=tuple(sub_breaks))

    exchange_moves: dict[tuple[str, str], int] = {}
    for em in exchange.movements:
        key = (em.reference, em.account)
        if key in exchange_moves:
            raise ValueError(f"exchange movement {em.reference} on {em.account} appears twice")
        exchange_moves[key] = em.signed_fen
    bank_moves: dict[tuple[str, str], int] = {}
    for bm in statement.movements:
        if bm.account == master.account:
            continue
        key = (bm.reference, bm.account)
        bank_moves[key] = bank_moves.get(key, 0) + bm.signed_fen

    matched = 0
    move_breaks: list[MovementBreak] = []
    for reference, account in sorted(set(exchange_moves) | set(bank_moves)):
        key = (reference, account)
        ex = exchange_moves.get(key)
        bk = bank_moves.get(key)
        known = ours.get(account)
        member_id = known.member_id if known is not None else None
        if ex is not None and bk is None:
            kind = MovementBreakKind.MISSING_AT_BANK
        elif ex is None and bk is not None:
            kind = MovementBreakKind.MISSING_AT_EXCHANGE
        elif ex != bk:
            kind = MovementBreakKind.AMOUNT_MISMATCH
        else:
            matched += 1
            continue
        move_breaks.append(MovementBreak(kind, reference, account, member_id, ex, bk))

    return ReconciliationReport(
        business_date=business_date,
        total_total=total_total,
        total_sub=total_sub,
        sub_sub=sub_sub,
        movements=Movements(matched=matched, breaks=tuple(move_breaks)),
    )


def _index_sub_accounts(
    sub_accounts: Sequence[ExchangeSubAccount],
) -> dict[str, ExchangeSubAccount]:
    index: dict[str, ExchangeSubAccount] = {}
    for sub in sub_accounts:
        if sub.account in index:
            raise ValueError(f"sub-account {sub.account} appears twice on the exchange side")
        index[sub.account] = sub
    return index
