"""Instruction file and statement file: exact text, round trips, strict parsing."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.clearing.domain.bank_files import (
    AccountType,
    BankFileError,
    BankStatement,
    StatementBalance,
    StatementMovement,
    parse_instruction_file,
    parse_statement,
    write_instruction_file,
    write_statement,
)
from services.clearing.domain.model import Direction, Instruction, InstructionKind, MovementKind

D = date(2026, 11, 20)

INSTRUCTIONS = (
    Instruction(D, 1, "SUB0000123", "m_01H", Direction.DEBIT, 10_052_00, InstructionKind.TRADE_NET,
                "D20261120-TN-m_01H"),
    Instruction(D, 2, "SUB0000789", "m_01K", Direction.CREDIT, 10_052_00,
                InstructionKind.TRADE_NET, "D20261120-TN-m_01K"),
    Instruction(D, 3, "SUB0000123", "m_01H", Direction.DEBIT, 500, InstructionKind.FEE,
                "D20261120-FE-m_01H"),
    Instruction(D, 4, "SUBFEE0001", None, Direction.CREDIT, 500, InstructionKind.FEE,
                "D20261120-FE-EXCHANGE"),
    Instruction(D, 5, "SUB0000456", "m_01J", Direction.DEBIT, 300_00, InstructionKind.WITHDRAWAL,
                "w_01K"),
)  # fmt: skip

INSTRUCTION_TEXT = """\
business_date,seq,sub_account,member_id,direction,amount,kind,reference
2026-11-20,1,SUB0000123,m_01H,DEBIT,10052.00,TRADE_NET,D20261120-TN-m_01H
2026-11-20,2,SUB0000789,m_01K,CREDIT,10052.00,TRADE_NET,D20261120-TN-m_01K
2026-11-20,3,SUB0000123,m_01H,DEBIT,5.00,FEE,D20261120-FE-m_01H
2026-11-20,4,SUBFEE0001,,CREDIT,5.00,FEE,D20261120-FE-EXCHANGE
2026-11-20,5,SUB0000456,m_01J,DEBIT,300.00,WITHDRAWAL,w_01K
#TOTAL,5,10357.00,10057.00
"""


def test_instruction_file_exact_text_and_identical_rewrite() -> None:
    first = write_instruction_file(D, INSTRUCTIONS)
    assert first == INSTRUCTION_TEXT
    assert write_instruction_file(D, INSTRUCTIONS).encode() == first.encode()


def test_instruction_file_round_trip() -> None:
    parsed = parse_instruction_file(INSTRUCTION_TEXT)
    assert parsed.business_date == D
    assert parsed.instructions == INSTRUCTIONS
    assert (parsed.totals.rows, parsed.totals.debit_fen, parsed.totals.credit_fen) == (
        5,
        10_357_00,
        10_057_00,
    )
    assert write_instruction_file(D, parsed.instructions) == INSTRUCTION_TEXT


def test_empty_instruction_file() -> None:
    text = write_instruction_file(D, ())
    assert text == (
        "business_date,seq,sub_account,member_id,direction,amount,kind,reference\n"
        "#TOTAL,0,0.00,0.00\n"
    )
    assert parse_instruction_file(text, expected_date=D).instructions == ()


def test_writer_refuses_broken_totals_identity() -> None:
    unbalanced = (
        Instruction(D, 1, "SUBA", "m_a", Direction.DEBIT, 100, InstructionKind.TRADE_NET, "r1"),
    )
    with pytest.raises(BankFileError) as err:
        write_instruction_file(D, unbalanced)
    assert err.value.code == "TOTALS_IDENTITY"


def test_writer_refuses_bad_seq_and_duplicates_and_commas() -> None:
    a = Instruction(D, 2, "SUBA", "m_a", Direction.DEBIT, 100, InstructionKind.WITHDRAWAL, "w1")
    with pytest.raises(BankFileError) as err:
        write_instruction_file(D, (a,))
    assert err.value.code == "BAD_SEQ"
    b = Instruction(D, 1, "SUBA", "m_a", Direction.DEBIT, 100, InstructionKind.WITHDRAWAL, "w1")
    c = Instruction(D, 2, "SUBA", "m_a", Direction.DEBIT, 100, InstructionKind.WITHDRAWAL, "w1")
    with pytest.raises(BankFileError) as err:
        write_instruction_file(D, (b, c))
    assert err.value.code == "DUPLICATE_REFERENCE"
    e = Instruction(D, 1, "SUB,A", "m_a", Direction.DEBIT, 100, InstructionKind.WITHDRAWAL, "w1")
    with pytest.raises(BankFileError) as err:
        write_instruction_file(D, (e,))
    assert err.value.code == "BAD_FIELD"


def test_parser_accepts_crlf_bom_and_bytes() -> None:
    crlf = ("\ufeff" + INSTRUCTION_TEXT.replace("\n", "\r\n")).encode("utf-8")
    assert parse_instruction_file(crlf).instructions == INSTRUCTIONS


def _replace_line(n: int, new: str) -> str:
    lines = INSTRUCTION_TEXT.splitlines()
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("", "EMPTY_FILE", None),
        (_replace_line(1, "business_date,seq"), "BAD_HEADER", 1),
        (_replace_line(2, "2026-11-20,1,SUB0000123,m_01H,DEBIT,10052.0,TRADE_NET,x"),
         "BAD_AMOUNT", 2),
        (_replace_line(2, "2026-11-20,1,SUB0000123,m_01H,DEBIT,1e4,TRADE_NET,x"), "BAD_AMOUNT", 2),
        (_replace_line(2, "2026-11-20,1,SUB0000123,m_01H,DEBIT,0.00,TRADE_NET,x"), "BAD_AMOUNT", 2),
        (_replace_line(3, "2026-11-21,2,SUB0000789,m_01K,CREDIT,10052.00,TRADE_NET,y"),
         "DATE_MISMATCH", 3),
        (_replace_line(3, "2026-11-20,3,SUB0000789,m_01K,CREDIT,10052.00,TRADE_NET,y"),
         "BAD_SEQ", 3),
        (_replace_line(3, "2026-11-20,2,SUB0000789,m_01K,SIDEWAYS,10052.00,TRADE_NET,y"),
         "BAD_DIRECTION", 3),
        (_replace_line(3, "2026-11-20,2,SUB0000789,m_01K,CREDIT,10052.00,NETTING,y"),
         "BAD_KIND", 3),
        (_replace_line(3, "2026-11-20,2,SUB0000789,m_01K,CREDIT,10052.00,TRADE_NET,"),
         "MISSING_FIELD", 3),
        (_replace_line(3, "2026-11-20,2,SUB0000789,m_01K,CREDIT,10052.00,TRADE_NET,"
                          "D20261120-TN-m_01H"), "DUPLICATE_REFERENCE", 3),
        (_replace_line(3, "2026-11-20,2,SUB0000789,m_01K,CREDIT,10052.00"), "BAD_COLUMN_COUNT", 3),
        (_replace_line(4, '2026-11-20,3,SUB0000123,m_01H,DEBIT,"5.00",FEE,z'), "BAD_FIELD", 4),
        (_replace_line(2, "2026-13-20,1,SUB0000123,m_01H,DEBIT,10052.00,TRADE_NET,x"),
         "BAD_DATE", 2),
        (_replace_line(7, "#TOTAL,5,10357.00,10057.01"), "BAD_TOTAL", 7),
        (_replace_line(7, "#TOTAL,4,10357.00,10057.00"), "BAD_TOTAL", 7),
        (INSTRUCTION_TEXT.replace("#TOTAL,5,10357.00,10057.00\n", ""), "MISSING_TOTAL", 7),
        (INSTRUCTION_TEXT + "2026-11-20,6,SUBA,m_a,DEBIT,1.00,WITHDRAWAL,w9\n",
         "DATA_AFTER_TOTAL", 8),
        # the 300.00 withdrawal relabelled as a fee: totals still add up, the identity does not
        (_replace_line(6, "2026-11-20,5,SUB0000456,m_01J,DEBIT,300.00,FEE,w_01K"),
         "TOTALS_IDENTITY", 7),
        (b"\xff\xfe", "ENCODING", None),
    ],
)  # fmt: skip
def test_instruction_parse_errors(text: str | bytes, code: str, line: int | None) -> None:
    with pytest.raises(BankFileError) as err:
        parse_instruction_file(text)
    assert (err.value.code, err.value.line) == (code, line)


def test_instruction_expected_date_is_checked() -> None:
    with pytest.raises(BankFileError) as err:
        parse_instruction_file(INSTRUCTION_TEXT, expected_date=date(2026, 11, 21))
    assert (err.value.code, err.value.line) == ("DATE_MISMATCH", 2)


# ------------------------------------------------------------------------ statement

STATEMENT_TEXT = """\
record_type,business_date,account,account_type,member_id,kind,reference,direction,amount,opening_balance,closing_balance
B,2026-11-20,MASTER0001,MASTER,,,,,,1500000.00,1500120.00
B,2026-11-20,SUB0000123,SUB,m_01H,,,,,20000.00,14943.00
B,2026-11-20,SUBFEE0001,SUB,,,,,,100.00,105.00
M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,BK20261120-778,CREDIT,5000.00,,
M,2026-11-20,SUB0000123,SUB,m_01H,TRADE_NET,D20261120-TN-m_01H,DEBIT,10052.00,,
M,2026-11-20,SUB0000123,SUB,m_01H,FEE,D20261120-FE-m_01H,DEBIT,5.00,,
"""

STATEMENT = BankStatement(
    business_date=D,
    balances=(
        StatementBalance("MASTER0001", AccountType.MASTER, None, 1_500_000_00, 1_500_120_00),
        StatementBalance("SUB0000123", AccountType.SUB, "m_01H", 20_000_00, 14_943_00),
        StatementBalance("SUBFEE0001", AccountType.SUB, None, 100_00, 105_00),
    ),
    movements=(
        StatementMovement("SUB0000123", AccountType.SUB, "m_01H", MovementKind.DEPOSIT,
                          "BK20261120-778", Direction.CREDIT, 5_000_00),
        StatementMovement("SUB0000123", AccountType.SUB, "m_01H", MovementKind.TRADE_NET,
                          "D20261120-TN-m_01H", Direction.DEBIT, 10_052_00),
        StatementMovement("SUB0000123", AccountType.SUB, "m_01H", MovementKind.FEE,
                          "D20261120-FE-m_01H", Direction.DEBIT, 500),
    ),
)  # fmt: skip


def test_statement_parse_example() -> None:
    parsed = parse_statement(STATEMENT_TEXT)
    assert parsed == STATEMENT
    assert parsed.master.closing_fen == 1_500_120_00
    assert [b.account for b in parsed.sub_balances] == ["SUB0000123", "SUBFEE0001"]


def test_statement_write_exact_text() -> None:
    assert write_statement(STATEMENT) == STATEMENT_TEXT


def _stmt_line(n: int, new: str) -> str:
    lines = STATEMENT_TEXT.splitlines()
    lines[n - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        (_stmt_line(1, "record_type,business_date"), "BAD_HEADER", 1),
        (_stmt_line(2, "X,2026-11-20,MASTER0001,MASTER,,,,,,1.00,1.00"), "BAD_RECORD_TYPE", 2),
        (_stmt_line(2, "B,2026-11-20,MASTER0001,BOSS,,,,,,1.00,1.00"), "BAD_ACCOUNT_TYPE", 2),
        (_stmt_line(2, "B,2026-11-20,MASTER0001,MASTER,m_x,,,,,1.00,1.00"), "UNEXPECTED_FIELD", 2),
        (_stmt_line(2, "B,2026-11-20,MASTER0001,MASTER,,,,,,1.00,"), "MISSING_FIELD", 2),
        (_stmt_line(2, "B,2026-11-20,MASTER0001,MASTER,,,,,,1.00,1.001"), "BAD_AMOUNT", 2),
        (_stmt_line(2, "B,2026-11-20,MASTER0001,MASTER,,DEPOSIT,,,,1.00,1.00"),
         "UNEXPECTED_FIELD", 2),
        (_stmt_line(2, "B,2026-11-21,MASTER0001,MASTER,,,,,,1.00,1.00"), "DATE_MISMATCH", 3),
        (_stmt_line(4, "B,2026-11-20,SUB0000123,SUB,,,,,,1.00,1.00"), "DUPLICATE_ACCOUNT", 4),
        (_stmt_line(4, "B,2026-11-20,MASTER0002,MASTER,,,,,,1.00,1.00"), "DUPLICATE_MASTER", 4),
        (_stmt_line(2, "B,2026-11-20,SUBZ,SUB,,,,,,1.00,1.00"), "MISSING_MASTER", 8),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,GIFT,BK1,CREDIT,5000.00,,"),
         "BAD_KIND", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,BK1,CREDIT,5000.00,1.00,"),
         "UNEXPECTED_FIELD", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,,CREDIT,5000.00,,"),
         "MISSING_FIELD", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000999,SUB,m_01H,DEPOSIT,BK1,CREDIT,5000.00,,"),
         "UNKNOWN_ACCOUNT", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,BK1,CREDIT,-5.00,,"),
         "BAD_AMOUNT", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,BK1,UP,5.00,,"),
         "BAD_DIRECTION", 5),
        (_stmt_line(5, "M,2026-11-20,SUB0000123,SUB,m_01H,DEPOSIT,BK1,CREDIT,5.00,"),
         "BAD_COLUMN_COUNT", 5),
    ],
)  # fmt: skip
def test_statement_parse_errors(text: str, code: str, line: int) -> None:
    with pytest.raises(BankFileError) as err:
        parse_statement(text)
    assert (err.value.code, err.value.line) == (code, line)
    assert f"line {line}" in str(err.value)


def test_statement_negative_balance_is_parsed_not_refused() -> None:
    text = _stmt_line(3, "B,2026-11-20,SUB0000123,SUB,m_01H,,,,,-1.00,-2.50")
    assert parse_statement(text).sub_balances[0].closing_fen == -250


tokens = st.text(alphabet="ABCDEFGHJKMNPQRSTVWXYZ0123456789_-", min_size=1, max_size=12)
money = st.integers(min_value=-(10**12), max_value=10**12)


@st.composite
def statements(draw: st.DrawFn) -> BankStatement:
    subs = draw(st.lists(tokens, unique=True, max_size=6))
    balances = [StatementBalance("MASTER" + draw(tokens), AccountType.MASTER, None,
                                 draw(money), draw(money))]  # fmt: skip
    for acc in subs:
        member = draw(st.one_of(st.none(), tokens))
        balances.append(StatementBalance("S" + acc, AccountType.SUB, member, draw(money),
                                         draw(money)))  # fmt: skip
    movements = []
    if subs:
        for _ in range(draw(st.integers(0, 8))):
            b = draw(st.sampled_from(balances[1:]))
            movements.append(
                StatementMovement(b.account, AccountType.SUB, b.member_id,
                                  draw(st.sampled_from(list(MovementKind))), draw(tokens),
                                  draw(st.sampled_from(list(Direction))),
                                  draw(st.integers(1, 10**12)))
            )  # fmt: skip
    day = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
    return BankStatement(day, tuple(balances), tuple(movements))


@settings(max_examples=100, deadline=None)
@given(statement=statements())
def test_statement_round_trip(statement: BankStatement) -> None:
    text = write_statement(statement)
    assert parse_statement(text, expected_date=statement.business_date) == statement
    assert write_statement(parse_statement(text)) == text
