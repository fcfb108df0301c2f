"""Vocabulary of the matching book: sides, times in force, states, statuses, reasons.

All values are plain strings (cheap to compare and to serialise); the ``Literal``
aliases let mypy check them.
"""

from __future__ import annotations

from typing import Final, Literal

Side = Literal["BUY", "SELL"]
TimeInForce = Literal["GTC", "DAY", "IOC", "FOK"]
BookState = Literal["trading", "halted", "delisted"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "EXPIRED"]

BUY: Final = "BUY"
SELL: Final = "SELL"
SIDES: Final = frozenset({BUY, SELL})

GTC: Final = "GTC"
DAY: Final = "DAY"
IOC: Final = "IOC"
FOK: Final = "FOK"
TIMES_IN_FORCE: Final = frozenset({GTC, DAY, IOC, FOK})

TRADING: Final = "trading"
HALTED: Final = "halted"
DELISTED: Final = "delisted"
BOOK_STATES: Final = frozenset({TRADING, HALTED, DELISTED})

NEW: Final = "NEW"
PARTIALLY_FILLED: Final = "PARTIALLY_FILLED"
FILLED: Final = "FILLED"
CANCELLED: Final = "CANCELLED"
EXPIRED: Final = "EXPIRED"


class BookConfigError(ValueError):
    """Invalid construction parameters (a programming or configuration error)."""


class Reason:
    """Reason codes carried by rejections and cancellations."""

    # Submit rejections (last-line pre-trade checks).
    PRICE_OFF_TICK: Final = "PRICE_OFF_TICK"
    PRICE_OUT_OF_BAND: Final = "PRICE_OUT_OF_BAND"
    QUANTITY_OFF_LOT: Final = "QUANTITY_OFF_LOT"
    BELOW_MIN_QUANTITY: Final = "BELOW_MIN_QUANTITY"
    INSTRUMENT_NOT_TRADING: Final = "INSTRUMENT_NOT_TRADING"
    DUPLICATE_ORDER_ID: Final = "DUPLICATE_ORDER_ID"
    INVALID_SIDE: Final = "INVALID_SIDE"
    INVALID_TIME_IN_FORCE: Final = "INVALID_TIME_IN_FORCE"
    # Cancel / amend rejections.
    ORDER_NOT_FOUND: Final = "ORDER_NOT_FOUND"
    ORDER_FINAL: Final = "ORDER_FINAL"
    INVALID_AMEND: Final = "INVALID_AMEND"
    # Book command rejections.
    INVALID_STATE_TRANSITION: Final = "INVALID_STATE_TRANSITION"
    INVALID_BUSINESS_DATE: Final = "INVALID_BUSINESS_DATE"
    INVALID_BAND: Final = "INVALID_BAND"
    # Cancellation reasons.
    USER: Final = "USER"
    IOC_REMAINDER: Final = "IOC_REMAINDER"
    FOK_UNFILLED: Final = "FOK_UNFILLED"
    SELF_TRADE_PREVENTED: Final = "SELF_TRADE_PREVENTED"
    DELISTED: Final = "DELISTED"
