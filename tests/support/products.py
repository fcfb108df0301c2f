"""A product body the exchange accepts, for tests: reference price 100.00, tick 0.01, lot 1,
band ±10%, risk R3, 200 holders; a test overrides what it is about."""

from typing import Any


def instrument_body(code: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": "Test product",
        "issuer": "Issuer Ltd",
        "product_type": "income_right_transfer",
        "face_value": "100.00",
        "issue_size": 1_000_000,
        "expected_yield": "0.065",
        "term_days": 365,
        "maturity_date": "2030-01-01",
        "risk_level": "R3",
        "tick_size": "0.01",
        "lot_size": 1,
        "min_order_qty": 1,
        "min_order_value": "0.00",
        "price_band_pct": "10",
        "reference_price": "100.00",
        "max_holders": 200,
        "transferable": True,
        "disclosure": {"underlying": "receivables"},
    }
    body.update(overrides)
    return body
