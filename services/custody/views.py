"""The public API's JSON shapes (docs/spec/api.md) built from custody rows."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from shared.clock import rfc3339
from shared.money import format_fen


def _ts(value: datetime) -> str:
    return rfc3339(value)


def _date(value: date) -> str:
    return value.isoformat()


def member(row: Any) -> dict[str, Any]:
    return {
        "member_id": row.member_id,
        "partner_id": row.partner_id,
        "external_ref": row.external_ref,
        "name": row.name,
        "kind": row.kind,
        "qualified": row.qualified,
        "risk_tolerance": row.risk_tolerance,
        "sub_account": row.sub_account,
        "created_at": _ts(row.created_at),
    }


def instrument(row: Any) -> dict[str, Any]:
    return {
        "code": row.code,
        "name": row.name,
        "issuer": row.issuer,
        "product_type": row.product_type,
        "face_value": format_fen(row.face_value_fen),
        "issue_size": row.issue_size,
        "expected_yield": row.expected_yield,
        "term_days": row.term_days,
        "maturity_date": _date(row.maturity_date),
        "risk_level": row.risk_level,
        "tick_size": format_fen(row.tick_fen),
        "lot_size": row.lot_size,
        "min_order_qty": row.min_order_qty,
        "min_order_value": format_fen(row.min_order_value_fen),
        "price_band_pct": row.price_band_pct,
        "reference_price": format_fen(row.reference_price_fen),
        "price_band_low": format_fen(row.band_low_fen),
        "price_band_high": format_fen(row.band_high_fen),
        "max_holders": row.max_holders,
        "transferable": row.transferable,
        "disclosure": row.disclosure,
        "state": row.state,
        "holder_count": row.holder_count,
    }


def _amounts(row: Any, money: bool) -> dict[str, Any]:
    def fmt(v: int) -> Any:
        return format_fen(v) if money else v

    return {
        "settled": fmt(row.settled),
        "held": fmt(row.held),
        "pending_in": fmt(row.pending_in),
        "pending_out": fmt(row.pending_out),
        "available": fmt(row.settled - row.held - row.pending_out),
    }


def balances(member_id: str, accounts: list[Any]) -> dict[str, Any]:
    cash: dict[str, Any] = {
        "settled": "0.00",
        "held": "0.00",
        "pending_in": "0.00",
        "pending_out": "0.00",
        "available": "0.00",
    }
    holdings = []
    for account in accounts:
        if account.asset == "CNY":
            cash = _amounts(account, money=True)
        elif account.settled or account.held or account.pending_in or account.pending_out:
            holdings.append({"instrument": account.asset, **_amounts(account, money=False)})
    return {"member_id": member_id, "cash": cash, "holdings": holdings}


def posting(row: Any) -> dict[str, Any]:
    return {
        "entry_id": row.entry_id,
        "asset": row.asset,
        "amount": format_fen(row.amount) if row.asset == "CNY" else row.amount,
        "kind": row.kind,
        "reference": row.reference,
        "business_date": _date(row.business_date),
        "created_at": _ts(row.created_at),
    }


def withdrawal(row: Any) -> dict[str, Any]:
    return {
        "withdrawal_id": row.withdrawal_id,
        "member_id": row.member_id,
        "amount": format_fen(row.amount_fen),
        "status": row.status,
        "business_date": _date(row.business_date),
        "created_at": _ts(row.created_at),
        "updated_at": _ts(row.updated_at),
    }


def deposit(row: Any) -> dict[str, Any]:
    return {
        "deposit_id": row.deposit_id,
        "member_id": row.member_id,
        "amount": format_fen(row.amount_fen),
        "bank_reference": row.bank_reference,
        "business_date": _date(row.business_date),
        "created_at": _ts(row.created_at),
    }
