"""Product (instrument) rules: attribute validation and the inclusive price band."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CODE_RE = re.compile(r"^[A-Z0-9]{4,16}$")
PRODUCT_TYPES = (
    "income_right_transfer",
    "directed_financing",
    "direct_financing_instrument",
    "other",
)
RISK_LEVELS = ("R1", "R2", "R3", "R4", "R5")
STATES = ("trading", "halted", "delisted")
_PCT_RE = re.compile(r"^(0|[1-9][0-9]{0,2})(\.[0-9]{1,4})?$")
_YIELD_RE = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]{1,6})?$")


def parse_percent(text: str) -> tuple[int, int]:
    """A percentage as an exact fraction (numerator, denominator) of 100: "10" -> (10, 1)."""
    if not _PCT_RE.match(text):
        raise ValueError(f"{text!r} is not a percentage with at most four decimals")
    value = Decimal(text)
    if not 0 <= value < 100:
        raise ValueError("a price band must be at least 0 and below 100 percent")
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    numerator = int("".join(map(str, digits)) or "0")
    denominator = 1
    if exponent < 0:
        denominator = 10**-exponent
    else:
        numerator *= 10**exponent
    return numerator, denominator


def price_band(reference_fen: int, band_pct: str, tick_fen: int) -> tuple[int, int]:
    """The inclusive band around the reference price, on ticks: the low end rounded up to a
    tick, the high end rounded down, with exact integer arithmetic."""
    if reference_fen <= 0 or tick_fen <= 0:
        raise ValueError("reference price and tick must be positive")
    num, den = parse_percent(band_pct)
    scale = 100 * den
    # low = ceil(ref * (scale - num) / scale / tick) * tick
    low_units = -((-reference_fen * (scale - num)) // (scale * tick_fen))
    high_units = (reference_fen * (scale + num)) // (scale * tick_fen)
    return low_units * tick_fen, high_units * tick_fen


def check_yield(text: str) -> str:
    if not _YIELD_RE.match(text):
        raise ValueError(f"{text!r} is not a decimal fraction such as '0.065'")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already refused it
        raise ValueError(str(exc)) from exc
    if value >= 1:
        raise ValueError("expected_yield is a fraction below 1 (e.g. '0.065')")
    return text
