"""The two bank files: the settlement instruction file and the bank statement file.

Both are UTF-8 CSV with a header row, ``\\n`` line endings and amounts as decimal
strings with two decimals. Fields never contain commas, quotes or line breaks, so
no CSV quoting is used or accepted. The parsers are strict: anything unexpected
raises :class:`BankFileError` with a stable ``code`` and the 1-based ``line``.
They accept ``\\r\\n`` line endings, a UTF-8 byte-order mark and a missing final
newline, since banks produce those; nothing else is forgiven.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from services.clearing.domain.model import (
    Direction,
    Instruction,
    InstructionKind,
    MovementKind,
    signed_fen,
)
from shared.money import MoneyError, format_fen, parse_fen

INSTRUCTION_HEADER = "business_date,seq,sub_account,member_id,direction,amount,kind,reference"
STATEMENT_HEADER = (
    "record_type,business_date,account,account_type,member_id,kind,reference,"
    "direction,amount,opening_balance,closing_balance"
)
TOTAL_MARKER = "#TOTAL"

_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SEQ_RE = re.compile(r"^[1-9][0-9]*$")
_FORBIDDEN = re.compile(r"[,\"\r\n]")
_AMOUNT_RE = re.compile(r"-?[0-9]+\.[0-9]{2}")


class BankFileError(ValueError):
    """A bank file that cannot be written or parsed.

    Codes: ENCODING, EMPTY_FILE, BAD_HEADER, BAD_COLUMN_COUNT, BAD_RECORD_TYPE,
    BAD_DATE, DATE_MISMATCH, BAD_SEQ, BAD_AMOUNT, BAD_DIRECTION, BAD_KIND,
    BAD_ACCOUNT_TYPE, MISSING_FIELD, UNEXPECTED_FIELD, BAD_FIELD,
    DUPLICATE_REFERENCE, DUPLICATE_ACCOUNT, MISSING_TOTAL, BAD_TOTAL,
    DATA_AFTER_TOTAL, TOTALS_IDENTITY, MISSING_MASTER, DUPLICATE_MASTER,
    UNKNOWN_ACCOUNT.
    """

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{code}: {message}")
        self.code = code
        self.line = line
        self.message = message


# --------------------------------------------------------------------------- helpers


def _lines(content: str | bytes) -> list[str]:
    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BankFileError("ENCODING", f"not UTF-8: {exc}") from exc
    else:
        text = content
    text = text.removeprefix("\ufeff")
    if text == "":
        raise BankFileError("EMPTY_FILE", "the file is empty")
    text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n")


def _split(line: str, n: int, line_no: int) -> list[str]:
    if '"' in line or "\r" in line:
        raise BankFileError(
            "BAD_FIELD", "quotes and stray carriage returns are not allowed", line_no
        )
    fields = line.split(",")
    if len(fields) != n:
        raise BankFileError("BAD_COLUMN_COUNT", f"expected {n} columns, got {len(fields)}", line_no)
    return fields


@functools.lru_cache(maxsize=64)
def _iso_date(text: str) -> date | None:
    """A strict YYYY-MM-DD date, or None (cached: every row of a file has the same date)."""
    if not _DATE_RE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _date(text: str, line_no: int) -> date:
    parsed = _iso_date(text)
    if parsed is None:
        if not _DATE_RE.match(text):
            raise BankFileError("BAD_DATE", f"{text!r} is not a YYYY-MM-DD date", line_no)
        raise BankFileError("BAD_DATE", f"{text!r} is not a valid date", line_no)
    return parsed


def _amount(
    text: str, line_no: int, *, allow_negative: bool = False, positive: bool = False
) -> int:
    if not _AMOUNT_RE.fullmatch(text):
        raise BankFileError("BAD_AMOUNT", f"{text!r} is not an amount with two decimals", line_no)
    try:
        fen = parse_fen(text, allow_negative=allow_negative)
    except MoneyError as exc:
        raise BankFileError("BAD_AMOUNT", f"{text!r}: {exc}", line_no) from exc
    if positive and fen <= 0:
        raise BankFileError("BAD_AMOUNT", f"{text!r} must be positive", line_no)
    return fen


def _direction(text: str, line_no: int) -> Direction:
    try:
        return Direction(text)
    except ValueError as exc:
        raise BankFileError("BAD_DIRECTION", f"{text!r} is not DEBIT or CREDIT", line_no) from exc


def _required(text: str, name: str, line_no: int | None) -> str:
    if text == "":
        raise BankFileError("MISSING_FIELD", f"{name} is empty", line_no)
    return text


def _empty(fields: Sequence[str], names: Sequence[str], line_no: int) -> None:
    for value, name in zip(fields, names, strict=True):
        if value != "":
            raise BankFileError("UNEXPECTED_FIELD", f"{name} must be empty here", line_no)


def _safe(value: str, name: str) -> str:
    if _FORBIDDEN.search(value):
        raise BankFileError("BAD_FIELD", f"{name} {value!r} contains a comma, quote or line break")
    return value


# ------------------------------------------------------------- instruction file (清算文件)


@dataclass(frozen=True, slots=True)
class InstructionTotals:
    rows: int
    debit_fen: int
    credit_fen: int
    withdrawal_fen: int


def instruction_totals(instructions: Sequence[Instruction]) -> InstructionTotals:
    return InstructionTotals(
        rows=len(instructions),
        debit_fen=sum(i.amount_fen for i in instructions if i.direction is Direction.DEBIT),
        credit_fen=sum(i.amount_fen for i in instructions if i.direction is Direction.CREDIT),
        withdrawal_fen=sum(
            i.amount_fen for i in instructions if i.kind is InstructionKind.WITHDRAWAL
        ),
    )


def _check_instructions(business_date: date, instructions: Sequence[Instruction]) -> None:
    references: set[str] = set()
    for expected_seq, ins in enumerate(instructions, start=1):
        if ins.business_date != business_date:
            raise BankFileError("DATE_MISMATCH", f"{ins.reference} is dated {ins.business_date}")
        if ins.seq != expected_seq:
            raise BankFileError("BAD_SEQ", f"{ins.reference} has seq {ins.seq}, not {expected_seq}")
        if ins.reference in references:
            raise BankFileError("DUPLICATE_REFERENCE", f"{ins.reference} appears twice")
        references.add(ins.reference)
    totals = instruction_totals(instructions)
    if totals.debit_fen - totals.credit_fen != totals.withdrawal_fen:
        raise BankFileError(
            "TOTALS_IDENTITY",
            f"DEBIT {format_fen(totals.debit_fen)} - CREDIT {format_fen(totals.credit_fen)}"
            f" != WITHDRAWAL {format_fen(totals.withdrawal_fen)}",
        )


def write_instruction_file(business_date: date, instructions: Sequence[Instruction]) -> str:
    """The instruction file text; the same instructions always give the same bytes."""
    _check_instructions(business_date, instructions)
    out = [INSTRUCTION_HEADER]
    for ins in instructions:
        out.append(
            ",".join(
                (
                    business_date.isoformat(),
                    str(ins.seq),
                    _required(_safe(ins.sub_account, "sub_account"), "sub_account", None),
                    _safe(ins.member_id or "", "member_id"),
                    ins.direction.value,
                    format_fen(ins.amount_fen),
                    ins.kind.value,
                    _required(_safe(ins.reference, "reference"), "reference", None),
                )
            )
        )
    totals = instruction_totals(instructions)
    out.append(
        f"{TOTAL_MARKER},{totals.rows},{format_fen(totals.debit_fen)},"
        f"{format_fen(totals.credit_fen)}"
    )
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class InstructionFile:
    #: None only for a file with no instruction rows and no expected date.
    business_date: date | None
    instructions: tuple[Instruction, ...]

    @property
    def totals(self) -> InstructionTotals:
        return instruction_totals(self.instructions)


def parse_instruction_file(
    content: str | bytes, expected_date: date | None = None
) -> InstructionFile:
    lines = _lines(content)
    if lines[0] != INSTRUCTION_HEADER:
        raise BankFileError("BAD_HEADER", f"expected header {INSTRUCTION_HEADER!r}", 1)
    business_date = expected_date
    instructions: list[Instruction] = []
    references: set[str] = set()
    total_line: int | None = None
    for line_no, line in enumerate(lines[1:], start=2):
        if total_line is not None:
            raise BankFileError("DATA_AFTER_TOTAL", "nothing may follow the #TOTAL row", line_no)
        if line.startswith(TOTAL_MARKER + ","):
            total_line = line_no
            _check_total_row(line, line_no, instructions)
            continue
        f = _split(line, 8, line_no)
        row_date = _date(f[0], line_no)
        if business_date is None:
            business_date = row_date
        elif row_date != business_date:
            raise BankFileError("DATE_MISMATCH", f"{row_date} is not {business_date}", line_no)
        if not _SEQ_RE.match(f[1]) or int(f[1]) != len(instructions) + 1:
            raise BankFileError(
                "BAD_SEQ", f"seq {f[1]!r}, expected {len(instructions) + 1}", line_no
            )
        sub_account = _required(f[2], "sub_account", line_no)
        direction = _direction(f[4], line_no)
        amount = _amount(f[5], line_no, positive=True)
        try:
            kind = InstructionKind(f[6])
        except ValueError as exc:
            raise BankFileError(
                "BAD_KIND", f"{f[6]!r} is not an instruction kind", line_no
            ) from exc
        if kind is not InstructionKind.FEE:
            _required(f[3], "member_id", line_no)
        if kind is InstructionKind.WITHDRAWAL and direction is not Direction.DEBIT:
            raise BankFileError("BAD_DIRECTION", "a WITHDRAWAL is a DEBIT", line_no)
        ref = _required(f[7], "reference", line_no)
        if ref in references:
            raise BankFileError("DUPLICATE_REFERENCE", f"{ref} appears twice", line_no)
        references.add(ref)
        instructions.append(
            Instruction(
                business_date=row_date,
                seq=len(instructions) + 1,
                sub_account=sub_account,
                member_id=f[3] or None,
                direction=direction,
                amount_fen=amount,
                kind=kind,
                reference=ref,
            )
        )
    if total_line is None:
        raise BankFileError("MISSING_TOTAL", "the #TOTAL row is missing", len(lines) + 1)
    totals = instruction_totals(instructions)
    if totals.debit_fen - totals.credit_fen != totals.withdrawal_fen:
        raise BankFileError(
            "TOTALS_IDENTITY", "sum of DEBIT - sum of CREDIT != sum of WITHDRAWAL", total_line
        )
    return InstructionFile(business_date=business_date, instructions=tuple(instructions))


def _check_total_row(line: str, line_no: int, instructions: Sequence[Instruction]) -> None:
    f = _split(line, 4, line_no)
    totals = instruction_totals(instructions)
    if not re.fullmatch(r"0|[1-9][0-9]*", f[1]) or int(f[1]) != totals.rows:
        raise BankFileError("BAD_TOTAL", f"row count {f[1]!r}, file has {totals.rows}", line_no)
    if _amount(f[2], line_no) != totals.debit_fen:
        raise BankFileError("BAD_TOTAL", f"DEBIT total {f[2]} does not match the rows", line_no)
    if _amount(f[3], line_no) != totals.credit_fen:
        raise BankFileError("BAD_TOTAL", f"CREDIT total {f[3]} does not match the rows", line_no)


# ------------------------------------------------------------- bank statement (对账文件)


class AccountType(StrEnum):
    MASTER = "MASTER"
    SUB = "SUB"


@dataclass(frozen=True, slots=True)
class StatementBalance:
    """A ``B`` row: one account's opening and closing balance for the day."""

    account: str
    account_type: AccountType
    member_id: str | None
    opening_fen: int
    closing_fen: int


@dataclass(frozen=True, slots=True)
class StatementMovement:
    """An ``M`` row: one movement the bank booked that day."""

    account: str
    account_type: AccountType
    member_id: str | None
    kind: MovementKind
    reference: str
    direction: Direction
    amount_fen: int

    @property
    def signed_fen(self) -> int:
        return signed_fen(self.direction, self.amount_fen)


@dataclass(frozen=True, slots=True)
class BankStatement:
    business_date: date
    #: The master account first is conventional but not required.
    balances: tuple[StatementBalance, ...]
    movements: tuple[StatementMovement, ...]

    @property
    def master(self) -> StatementBalance:
        return next(b for b in self.balances if b.account_type is AccountType.MASTER)

    @property
    def sub_balances(self) -> tuple[StatementBalance, ...]:
        return tuple(b for b in self.balances if b.account_type is AccountType.SUB)


def _check_statement(statement: BankStatement) -> None:
    masters = [b for b in statement.balances if b.account_type is AccountType.MASTER]
    if not masters:
        raise BankFileError("MISSING_MASTER", "no B row for the master account")
    if len(masters) > 1:
        raise BankFileError("DUPLICATE_MASTER", "more than one master account B row")
    accounts: dict[str, AccountType] = {}
    for b in statement.balances:
        if b.account in accounts:
            raise BankFileError("DUPLICATE_ACCOUNT", f"{b.account} has two B rows")
        accounts[b.account] = b.account_type
    for m in statement.movements:
        if accounts.get(m.account) is not m.account_type:
            raise BankFileError(
                "UNKNOWN_ACCOUNT",
                f"movement {m.reference} on {m.account} which has no B row of that type",
            )
        if m.amount_fen <= 0:
            raise BankFileError("BAD_AMOUNT", f"movement {m.reference} amount must be positive")


def write_statement(statement: BankStatement) -> str:
    """The statement file text: B rows then M rows, in the order given."""
    _check_statement(statement)
    day = statement.business_date.isoformat()
    out = [STATEMENT_HEADER]
    for b in statement.balances:
        out.append(
            ",".join(
                (
                    "B",
                    day,
                    _safe(b.account, "account"),
                    b.account_type.value,
                    _safe(b.member_id or "", "member_id"),
                    "",
                    "",
                    "",
                    "",
                    format_fen(b.opening_fen),
                    format_fen(b.closing_fen),
                )
            )
        )
    for m in statement.movements:
        out.append(
            ",".join(
                (
                    "M",
                    day,
                    _safe(m.account, "account"),
                    m.account_type.value,
                    _safe(m.member_id or "", "member_id"),
                    m.kind.value,
                    _safe(m.reference, "reference"),
                    m.direction.value,
                    format_fen(m.amount_fen),
                    "",
                    "",
                )
            )
        )
    return "\n".join(out) + "\n"


def parse_statement(content: str | bytes, expected_date: date | None = None) -> BankStatement:
    lines = _lines(content)
    if lines[0] != STATEMENT_HEADER:
        raise BankFileError("BAD_HEADER", f"expected header {STATEMENT_HEADER!r}", 1)
    business_date = expected_date
    balances: list[StatementBalance] = []
    movements: list[StatementMovement] = []
    movement_lines: list[int] = []
    first_line: dict[str, int] = {}
    master_line: int | None = None
    for line_no, line in enumerate(lines[1:], start=2):
        f = _split(line, 11, line_no)
        row_date = _date(f[1], line_no)
        if business_date is None:
            business_date = row_date
        elif row_date != business_date:
            raise BankFileError("DATE_MISMATCH", f"{row_date} is not {business_date}", line_no)
        account = _required(f[2], "account", line_no)
        try:
            account_type = AccountType(f[3])
        except ValueError as exc:
            raise BankFileError(
                "BAD_ACCOUNT_TYPE", f"{f[3]!r} is not MASTER or SUB", line_no
            ) from exc
        member_id = f[4] or None
        if account_type is AccountType.MASTER and member_id is not None:
            raise BankFileError("UNEXPECTED_FIELD", "the master account has no member_id", line_no)
        if f[0] == "B":
            _empty(f[5:9], ("kind", "reference", "direction", "amount"), line_no)
            if account in first_line:
                raise BankFileError(
                    "DUPLICATE_ACCOUNT", f"{account} already on line {first_line[account]}", line_no
                )
            first_line[account] = line_no
            if account_type is AccountType.MASTER:
                if master_line is not None:
                    raise BankFileError(
                        "DUPLICATE_MASTER",
                        f"a master B row is already on line {master_line}",
                        line_no,
                    )
                master_line = line_no
            balances.append(
                StatementBalance(
                    account=account,
                    account_type=account_type,
                    member_id=member_id,
                    opening_fen=_amount(
                        _required(f[9], "opening_balance", line_no), line_no, allow_negative=True
                    ),
                    closing_fen=_amount(
                        _required(f[10], "closing_balance", line_no), line_no, allow_negative=True
                    ),
                )
            )
        elif f[0] == "M":
            _empty(f[9:11], ("opening_balance", "closing_balance"), line_no)
            try:
                kind = MovementKind(_required(f[5], "kind", line_no))
            except ValueError as exc:
                raise BankFileError(
                    "BAD_KIND", f"{f[5]!r} is not a movement kind", line_no
                ) from exc
            movement_lines.append(line_no)
            movements.append(
                StatementMovement(
                    account=account,
                    account_type=account_type,
                    member_id=member_id,
                    kind=kind,
                    reference=_required(f[6], "reference", line_no),
                    direction=_direction(f[7], line_no),
                    amount_fen=_amount(_required(f[8], "amount", line_no), line_no, positive=True),
                )
            )
        else:
            raise BankFileError("BAD_RECORD_TYPE", f"{f[0]!r} is not B or M", line_no)
    if business_date is None:
        raise BankFileError("MISSING_MASTER", "the statement has no rows", len(lines) + 1)
    if master_line is None:
        raise BankFileError("MISSING_MASTER", "no B row for the master account", len(lines) + 1)
    types = {b.account: b.account_type for b in balances}
    for m, m_line in zip(movements, movement_lines, strict=True):
        if types.get(m.account) is not m.account_type:
            raise BankFileError(
                "UNKNOWN_ACCOUNT", f"{m.account} has no {m.account_type.value} B row", m_line
            )
    statement = BankStatement(
        business_date=business_date, balances=tuple(balances), movements=tuple(movements)
    )
    try:
        _check_statement(statement)
    except BankFileError as exc:
        raise BankFileError(exc.code, exc.message, len(lines) + 1) from exc
    return statement
