"""The money, price and quantity types: exact, range-checked, and never floats."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.money import (
    MAX_FEN,
    MAX_UNITS,
    Money,
    MoneyError,
    check_units,
    format_fen,
    format_scaled,
    parse_fen,
    round_half_up_div,
)


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0", 0),
        ("0.00", 0),
        ("1", 100),
        ("100.25", 10025),
        ("0.1", 10),
        ("0.01", 1),
        ("50000.00", 5_000_000),
    ],
)
def test_parses_decimal_strings_exactly(text: str, fen: int) -> None:
    assert parse_fen(text) == fen


@pytest.mark.parametrize("value", [0.1, 1.0, 100.25, float("nan"), float("inf")])
def test_refuses_floats(value: float) -> None:
    with pytest.raises(MoneyError) as err:
        parse_fen(value)
    assert err.value.code == "FLOAT_NOT_ALLOWED"


@pytest.mark.parametrize(
    "text",
    ["1.001", "0.123", "1e3", "", " 1.00", "1.", ".5", "01.00", "+1.00", "1,00", "NaN", "1_000"],
)
def test_refuses_wrong_precision_and_malformed_strings(text: str) -> None:
    with pytest.raises(MoneyError) as err:
        parse_fen(text)
    assert err.value.code == "INVALID_AMOUNT"


@pytest.mark.parametrize("value", [100, True, None, Decimal("1.00"), b"1.00"])
def test_refuses_non_strings_at_the_edge(value: object) -> None:
    with pytest.raises(MoneyError):
        parse_fen(value)


def test_refuses_negative_unless_allowed() -> None:
    with pytest.raises(MoneyError) as err:
        parse_fen("-1.00")
    assert err.value.code == "NEGATIVE_AMOUNT"
    assert parse_fen("-1.50", allow_negative=True) == -150


def test_refuses_overflow() -> None:
    assert parse_fen("10000000000000.00") == MAX_FEN
    for text in ("10000000000000.01", "99999999999999999999999.00"):
        with pytest.raises(MoneyError) as err:
            parse_fen(text)
        assert err.value.code == "AMOUNT_OUT_OF_RANGE"
    with pytest.raises(MoneyError):
        Money(MAX_FEN) + Money(1)
    with pytest.raises(MoneyError):
        Money(MAX_FEN // 2) * 3


def test_money_arithmetic_is_exact() -> None:
    # 0.1 + 0.2 is not 0.3 in binary floating point; in fen it is.
    assert Money.parse("0.10") + Money.parse("0.20") == Money.parse("0.30")
    assert str(Money.parse("100.50") * 3) == "301.50"
    assert str(Money.parse("5.00") - Money.parse("7.25")) == "-2.25"
    assert Money.from_decimal(Decimal("12.30")) == Money(1230)
    with pytest.raises(MoneyError):
        Money.from_decimal(Decimal("12.345"))
    with pytest.raises(MoneyError):
        Money.parse("1.00") * 1.5  # type: ignore[operator]


def test_quantities_are_positive_integers_within_range() -> None:
    assert check_units(10) == 10
    for bad, code in [
        (0, "ZERO_QUANTITY"),
        (-1, "NEGATIVE_QUANTITY"),
        (MAX_UNITS + 1, "QUANTITY_OUT_OF_RANGE"),
    ]:
        with pytest.raises(MoneyError) as err:
            check_units(bad)
        assert err.value.code == code
    with pytest.raises(MoneyError) as err:
        check_units(1.0)  # type: ignore[arg-type]
    assert err.value.code == "FLOAT_NOT_ALLOWED"
    with pytest.raises(MoneyError):
        check_units(True)


def test_average_price_rounds_half_up() -> None:
    # 3 units for 100.00 + 100.00 + 100.01 = 300.01 -> 100.00333.. -> 100.0033
    assert format_scaled(round_half_up_div(30001 * 100, 3), 4) == "100.0033"
    assert round_half_up_div(5, 2) == 3
    assert round_half_up_div(-5, 2) == -3
    assert round_half_up_div(4, 3) == 1


class Body(BaseModel):
    amount: Money


def test_pydantic_field_accepts_strings_and_refuses_numbers() -> None:
    assert Body.model_validate_json('{"amount": "12.30"}').amount == Money(1230)
    assert Body(amount=Money(5)).model_dump(mode="json") == {"amount": "0.05"}
    for raw in ('{"amount": 12.3}', '{"amount": 12}', '{"amount": "12.345"}'):
        with pytest.raises(ValidationError):
            Body.model_validate_json(raw)


@given(st.integers(min_value=-MAX_FEN, max_value=MAX_FEN))
def test_format_then_parse_round_trips(fen: int) -> None:
    assert parse_fen(format_fen(fen), allow_negative=True) == fen


@given(st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_parsing_agrees_with_decimal(value: Decimal) -> None:
    text = f"{value:.2f}"
    assert parse_fen(text) == int(Decimal(text) * 100)


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=50))
def test_sums_are_exact(amounts: list[int]) -> None:
    total = Money.ZERO
    for fen in amounts:
        total = total + Money(fen)
    assert total.fen == sum(amounts)
    assert Decimal(str(total)) == sum((Decimal(f) / 100 for f in amounts), Decimal(0))
