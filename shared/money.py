"""Exact money, price and quantity types.

Inside the system every amount is an integer: fen for money and prices (CNY per unit),
whole units for quantities. Decimal strings exist only at the JSON and file edges.
Floats are refused everywhere: a float cannot say 0.10 exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Self

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

#: Amounts are stored in PostgreSQL BIGINT columns.
INT64_MAX = 2**63 - 1
#: The largest amount the system accepts, in fen: 10^15 fen = 10 trillion CNY.
#: Far below INT64_MAX so that price x quantity and sums of many amounts cannot overflow.
MAX_FEN = 10**15
#: The largest unit quantity the system accepts.
MAX_UNITS = 10**12

_DECIMAL_RE = re.compile(r"^(-)?(0|[1-9][0-9]*)(?:\.([0-9]{1,2}))?$")


class MoneyError(ValueError):
    """A value that is not an exact, in-range amount, price or quantity."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_fen(text: object, *, allow_negative: bool = False) -> int:
    """Parse a decimal string with at most two decimals into integer fen.

    Refuses floats, ints, bools, more than two decimals, exponents, blanks and
    amounts beyond MAX_FEN. Integers are refused too: at the edge money is a string.
    """
    if isinstance(text, float):
        raise MoneyError("FLOAT_NOT_ALLOWED", "money must be a decimal string, not a float")
    if not isinstance(text, str):
        raise MoneyError(
            "INVALID_AMOUNT", f"money must be a decimal string, got {type(text).__name__}"
        )
    match = _DECIMAL_RE.match(text)
    if match is None:
        raise MoneyError(
            "INVALID_AMOUNT",
            f"{text!r} is not a decimal amount with at most two decimals",
        )
    sign, whole, frac = match.groups()
    if len(whole) > 16:
        raise MoneyError("AMOUNT_OUT_OF_RANGE", f"{text!r} is out of range")
    fen = int(whole) * 100 + int((frac or "").ljust(2, "0"))
    if sign:
        if not allow_negative:
            raise MoneyError("NEGATIVE_AMOUNT", f"{text!r} must not be negative")
        fen = -fen
    check_fen(fen)
    return fen


def check_fen(fen: int) -> int:
    """Check that an integer amount of fen is inside the accepted range."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise MoneyError("INVALID_AMOUNT", f"fen must be an int, got {type(fen).__name__}")
    if not -MAX_FEN <= fen <= MAX_FEN:
        raise MoneyError("AMOUNT_OUT_OF_RANGE", f"{fen} fen is out of range (max {MAX_FEN})")
    return fen


def format_fen(fen: int) -> str:
    """Format integer fen as a decimal string with exactly two decimals."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise MoneyError("INVALID_AMOUNT", f"fen must be an int, got {type(fen).__name__}")
    sign = "-" if fen < 0 else ""
    whole, frac = divmod(abs(fen), 100)
    return f"{sign}{whole}.{frac:02d}"


def check_units(units: int, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    """Check a unit quantity: an int (never a float or bool) within MAX_UNITS."""
    if isinstance(units, float):
        raise MoneyError("FLOAT_NOT_ALLOWED", "a quantity must be an integer, not a float")
    if isinstance(units, bool) or not isinstance(units, int):
        raise MoneyError(
            "INVALID_QUANTITY", f"a quantity must be an integer, got {type(units).__name__}"
        )
    if abs(units) > MAX_UNITS:
        raise MoneyError(
            "QUANTITY_OUT_OF_RANGE", f"{units} units is out of range (max {MAX_UNITS})"
        )
    if units < 0 and not allow_negative:
        raise MoneyError("NEGATIVE_QUANTITY", f"{units} must not be negative")
    if units == 0 and not allow_zero:
        raise MoneyError("ZERO_QUANTITY", "a quantity must be positive")
    return units


def round_half_up_div(numerator: int, denominator: int) -> int:
    """Integer division rounded half away from zero, for exact averages."""
    if denominator == 0:
        raise ZeroDivisionError("denominator is zero")
    q, r = divmod(abs(numerator), abs(denominator))
    if 2 * r >= abs(denominator):
        q += 1
    return q if (numerator >= 0) == (denominator > 0) else -q


def format_scaled(value: int, decimals: int) -> str:
    """Format an integer scaled by 10**decimals as a decimal string (e.g. 4-decimal prices)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """An exact amount of CNY in fen. Arithmetic stays exact and range-checked."""

    fen: int

    ZERO: ClassVar[Money]

    def __post_init__(self) -> None:
        check_fen(self.fen)

    @classmethod
    def parse(cls, text: object, *, allow_negative: bool = False) -> Self:
        return cls(parse_fen(text, allow_negative=allow_negative))

    @classmethod
    def from_decimal(cls, value: Decimal) -> Self:
        """Convert a Decimal that is already exact to two places; anything finer is refused."""
        if not isinstance(value, Decimal):
            raise MoneyError("INVALID_AMOUNT", "expected a Decimal")
        scaled = value * 100
        if scaled != scaled.to_integral_value():
            raise MoneyError("INVALID_AMOUNT", f"{value} has more than two decimals")
        return cls(int(scaled))

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.fen + other.fen)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.fen - other.fen)

    def __neg__(self) -> Money:
        return Money(-self.fen)

    def __mul__(self, units: int) -> Money:
        check_units(units, allow_zero=True, allow_negative=True)
        return Money(self.fen * units)

    __rmul__ = __mul__

    def __str__(self) -> str:
        return format_fen(self.fen)

    def __bool__(self) -> bool:
        return self.fen != 0

    def to_decimal(self) -> Decimal:
        return Decimal(self.fen).scaleb(-2)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: object) -> Money:
            if isinstance(value, Money):
                return value
            try:
                return cls.parse(value)
            except MoneyError as exc:
                raise ValueError(str(exc)) from exc

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(
                pattern=r"^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$"
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="always"),
        )


Money.ZERO = Money(0)
