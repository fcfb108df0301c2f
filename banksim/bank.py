"""The simulated bank: a master account, sub-accounts and a book of movements.

The master account holds every yuan in custody. Sub-accounts are the bank's
per-owner ledgers under it. Deposits and withdrawals move money in and out of
custody, so they are booked on a sub-account and on the master; TRADE_NET and
FEE instructions move money between sub-accounts, so they touch sub-accounts only.
Because the master is booked independently, an instruction file applied only in
part (or with a wrong amount) shows up at the bank as master ≠ Σ subs (总分).

Every booking carries a business date; balances of date D are computed from the
bookings dated D or earlier, so bookings of D+1 never change D's statement.
A reference is booked at most once: applying the same deposit notice or
instruction file twice books nothing more.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from shared.money import MoneyError, format_fen, parse_fen

INSTRUCTION_HEADER = [
    "business_date",
    "seq",
    "sub_account",
    "member_id",
    "direction",
    "amount",
    "kind",
    "reference",
]
STATEMENT_HEADER = [
    "record_type",
    "business_date",
    "account",
    "account_type",
    "member_id",
    "kind",
    "reference",
    "direction",
    "amount",
    "opening_balance",
    "closing_balance",
]
DIRECTIONS = ("DEBIT", "CREDIT")
INSTRUCTION_KINDS = ("TRADE_NET", "FEE", "WITHDRAWAL")


class BankError(ValueError):
    """The bank refuses an operation (unknown account, malformed file, ...)."""


@dataclass(frozen=True, slots=True)
class SubAccount:
    account: str
    member_id: str | None
    opened_on: date | None = None


@dataclass(frozen=True, slots=True)
class Booking:
    business_date: date
    account: str
    kind: str
    reference: str
    direction: str
    amount_fen: int

    @property
    def signed_fen(self) -> int:
        return self.amount_fen if self.direction == "CREDIT" else -self.amount_fen


@dataclass(frozen=True, slots=True)
class StatementInjection:
    """Faults to put into one statement (the bank's books stay as they are)."""

    #: Sub-accounts the exchange does not know, with their balance; the balance is
    #: added to the master too (the money is in custody), so Σ subs stays = master.
    unknown_accounts: Mapping[str, int] = field(default_factory=dict)
    #: Sub-accounts left out of the statement entirely (B row and M rows).
    drop_accounts: frozenset[str] = frozenset()
    #: Added to the master account's closing balance only (a 总分 break).
    master_offset_fen: int = 0


@dataclass(frozen=True, slots=True)
class ApplyResult:
    booked: tuple[str, ...]
    already_applied: tuple[str, ...]
    skipped: tuple[str, ...]


@dataclass
class Bank:
    master_account: str = "MASTER0001"
    fee_account: str = "SUBFEE0001"
    accounts: dict[str, SubAccount] = field(default_factory=dict)
    bookings: list[Booking] = field(default_factory=list)
    applied: set[str] = field(default_factory=set)

    #: Each account's bookings (a statement of many accounts stays linear).
    _by_account: dict[str, list[Booking]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for b in self.bookings:
            self._by_account.setdefault(b.account, []).append(b)
        if self.fee_account not in self.accounts:
            self.accounts[self.fee_account] = SubAccount(self.fee_account, None)

    # ------------------------------------------------------------------ operations

    def open_account(
        self, account: str, member_id: str | None, opened_on: date | None = None
    ) -> SubAccount:
        """Open a sub-account; opening the same one again for the same member is a no-op."""
        _check_token(account, "account")
        if member_id is not None:
            _check_token(member_id, "member_id")
        if account == self.master_account:
            raise BankError(f"{account} is the master account")
        existing = self.accounts.get(account)
        if existing is not None:
            if existing.member_id != member_id:
                raise BankError(f"{account} already belongs to {existing.member_id}")
            return existing
        sub = SubAccount(account, member_id, opened_on)
        self.accounts[account] = sub
        return sub

    def deposit(self, business_date: date, account: str, amount_fen: int, reference: str) -> bool:
        """A deposit notice: credit the sub-account and the master. False if seen before."""
        self._require(account)
        _check_positive(amount_fen)
        _check_token(reference, "reference")
        if reference in self.applied:
            return False
        self._book(business_date, account, "DEPOSIT", reference, "CREDIT", amount_fen)
        self._book(business_date, self.master_account, "DEPOSIT", reference, "CREDIT", amount_fen)
        self.applied.add(reference)
        return True

    def book_unsolicited(
        self,
        business_date: date,
        account: str,
        direction: str,
        amount_fen: int,
        reference: str | None = None,
        kind: str = "ADJUSTMENT",
    ) -> str:
        """A movement the bank books on its own (custody in or out): sub-account and master."""
        self._require(account)
        _check_positive(amount_fen)
        if direction not in DIRECTIONS:
            raise BankError(f"{direction!r} is not DEBIT or CREDIT")
        if reference is None:
            reference = f"BK{business_date:%Y%m%d}-ADJ{len(self.bookings) + 1}"
        if reference in self.applied:
            raise BankError(f"reference {reference} is already booked")
        self._book(business_date, account, kind, reference, direction, amount_fen)
        self._book(business_date, self.master_account, kind, reference, direction, amount_fen)
        self.applied.add(reference)
        return reference

    def apply_instructions(
        self,
        content: str,
        *,
        skip_references: Iterable[str] = (),
        amount_overrides: Mapping[str, int] | None = None,
    ) -> ApplyResult:
        """Book every row of an instruction file whose reference is not booked yet.

        ``skip_references`` and ``amount_overrides`` inject faults: a row not booked,
        or booked with another amount. Every row is checked before anything is booked.
        """
        rows = parse_instructions(content)
        skip = set(skip_references)
        overrides = dict(amount_overrides or {})
        references = {row.reference for row in rows}
        for ref in skip | set(overrides):
            if ref not in references:
                raise BankError(f"injection refers to {ref}, which is not in the file")
        for row in rows:
            self._require(row.account)
        booked: list[str] = []
        already: list[str] = []
        skipped: list[str] = []
        for row in rows:
            if row.reference in self.applied:
                already.append(row.reference)
                continue
            if row.reference in skip:
                skipped.append(row.reference)
                continue
            amount = overrides.get(row.reference, row.amount_fen)
            _check_positive(amount)
            self._book(
                row.business_date, row.account, row.kind, row.reference, row.direction, amount
            )
            if row.kind == "WITHDRAWAL":
                self._book(
                    row.business_date,
                    self.master_account,
                    row.kind,
                    row.reference,
                    row.direction,
                    amount,
                )
            self.applied.add(row.reference)
            booked.append(row.reference)
        return ApplyResult(tuple(booked), tuple(already), tuple(skipped))

    # ------------------------------------------------------------------- read side

    def balance_fen(self, account: str, as_of: date) -> int:
        """Balance at the end of ``as_of``."""
        return sum(
            b.signed_fen for b in self._by_account.get(account, ()) if b.business_date <= as_of
        )

    def statement(self, business_date: date, inject: StatementInjection | None = None) -> str:
        """The statement file of ``business_date`` (B rows, then the day's M rows)."""
        inject = inject or StatementInjection()
        day = business_date.isoformat()
        previous = date.fromordinal(business_date.toordinal() - 1)
        unknown = dict(inject.unknown_accounts)
        for acc in unknown:
            if acc in self.accounts or acc == self.master_account:
                raise BankError(f"{acc} is not unknown: the bank holds it")
        for acc in inject.drop_accounts:
            self._require(acc)
        subs = sorted(
            (
                a
                for a in self.accounts.values()
                if a.opened_on is None or a.opened_on <= business_date
            ),
            key=lambda a: a.account,
        )
        extra = sum(unknown.values())
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_HEADER)
        master_open = self.balance_fen(self.master_account, previous) + extra
        master_close = (
            self.balance_fen(self.master_account, business_date) + extra + inject.master_offset_fen
        )
        writer.writerow(
            [
                "B",
                day,
                self.master_account,
                "MASTER",
                "",
                "",
                "",
                "",
                "",
                format_fen(master_open),
                format_fen(master_close),
            ]
        )
        rows: list[tuple[str, str, int, int]] = [
            (
                a.account,
                a.member_id or "",
                self.balance_fen(a.account, previous),
                self.balance_fen(a.account, business_date),
            )
            for a in subs
            if a.account not in inject.drop_accounts
        ]
        rows.extend((acc, "", fen, fen) for acc, fen in unknown.items())
        for acc, member, opening, closing in sorted(rows):
            writer.writerow(
                [
                    "B",
                    day,
                    acc,
                    "SUB",
                    member,
                    "",
                    "",
                    "",
                    "",
                    format_fen(opening),
                    format_fen(closing),
                ]
            )
        for b in self.bookings:
            if (
                b.business_date != business_date
                or b.account == self.master_account
                or b.account in inject.drop_accounts
            ):
                continue
            member = self.accounts[b.account].member_id or ""
            writer.writerow(
                [
                    "M",
                    day,
                    b.account,
                    "SUB",
                    member,
                    b.kind,
                    b.reference,
                    b.direction,
                    format_fen(b.amount_fen),
                    "",
                    "",
                ]
            )
        return out.getvalue()

    # ------------------------------------------------------------------- internals

    def _require(self, account: str) -> SubAccount:
        sub = self.accounts.get(account)
        if sub is None:
            raise BankError(f"the bank has no sub-account {account}")
        return sub

    def _book(
        self,
        business_date: date,
        account: str,
        kind: str,
        reference: str,
        direction: str,
        amount_fen: int,
    ) -> None:
        booking = Booking(business_date, account, kind, reference, direction, amount_fen)
        self.bookings.append(booking)
        self._by_account.setdefault(account, []).append(booking)


@dataclass(frozen=True, slots=True)
class InstructionRow:
    business_date: date
    account: str
    member_id: str
    direction: str
    amount_fen: int
    kind: str
    reference: str


def parse_instructions(content: str) -> list[InstructionRow]:
    """The bank's own reading of an instruction file, with its totals checked."""
    lines = list(csv.reader(io.StringIO(content.removeprefix("\ufeff"))))
    if not lines or lines[0] != INSTRUCTION_HEADER:
        raise BankError("instruction file: bad or missing header")
    if len(lines) < 2 or not lines[-1] or lines[-1][0] != "#TOTAL":
        raise BankError("instruction file: the last row must be #TOTAL")
    rows: list[InstructionRow] = []
    for n, fields in enumerate(lines[1:-1], start=1):
        if len(fields) != 8:
            raise BankError(f"instruction row {n}: expected 8 columns")
        day, seq, account, member, direction, amount, kind, ref = fields
        if seq != str(n):
            raise BankError(f"instruction row {n}: seq {seq!r}")
        if direction not in DIRECTIONS or kind not in INSTRUCTION_KINDS or not ref:
            raise BankError(f"instruction row {n}: bad direction, kind or reference")
        try:
            rows.append(
                InstructionRow(
                    date.fromisoformat(day),
                    account,
                    member,
                    direction,
                    parse_fen(amount),
                    kind,
                    ref,
                )
            )
        except (ValueError, MoneyError) as exc:
            raise BankError(f"instruction row {n}: {exc}") from exc
    if len({r.business_date for r in rows}) > 1:
        raise BankError("instruction file: rows of several dates")
    if len({r.reference for r in rows}) != len(rows):
        raise BankError("instruction file: duplicate reference")
    total = lines[-1]
    debit = sum(r.amount_fen for r in rows if r.direction == "DEBIT")
    credit = sum(r.amount_fen for r in rows if r.direction == "CREDIT")
    try:
        declared = (int(total[1]), parse_fen(total[2]), parse_fen(total[3]))
    except (IndexError, ValueError, MoneyError) as exc:
        raise BankError(f"instruction file: bad #TOTAL row: {exc}") from exc
    if len(total) != 4 or declared != (len(rows), debit, credit):
        raise BankError("instruction file: #TOTAL does not match the rows")
    return rows


def _check_positive(amount_fen: int) -> None:
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen <= 0:
        raise BankError(f"amount must be a positive number of fen, got {amount_fen!r}")


def _check_token(value: str, name: str) -> None:
    if not value or any(c in value for c in ',"\r\n'):
        raise BankError(f"{name} {value!r} is empty or contains a comma, quote or line break")
