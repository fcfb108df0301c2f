"""`exchange demo seed`: a small demo market, created through the public API.

A partner, operator and auditor tokens, two products, members with cash and holdings, and
a few orders (one of them crossing, so the ticker has a trade). Safe to run again: what
exists is kept, and the credentials are remembered in var/demo.json.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from exchange_cli.api_client import ApiError, PartnerClient, StaffClient

#: Where the demo credentials are remembered between runs.
STATE_FILE = Path(os.environ.get("EXCHANGE_DEMO_STATE", "var/demo.json"))

PRODUCTS: list[dict[str, Any]] = [
    {
        "code": "ZJ2026A01",
        "name": "浙江应收账款收益权 2026 第1期",
        "issuer": "Zhejiang Demo Factoring Ltd",
        "product_type": "income_right_transfer",
        "face_value": "100.00",
        "issue_size": 100_000,
        "expected_yield": "0.065",
        "term_days": 365,
        "maturity_date": "2027-11-20",
        "risk_level": "R3",
        "tick_size": "0.01",
        "lot_size": 1,
        "min_order_qty": 1,
        "min_order_value": "100.00",
        "price_band_pct": "10",
        "reference_price": "100.00",
        "max_holders": 200,
        "transferable": True,
        "disclosure": {
            "underlying_assets": "Trade receivables of 12 manufacturers",
            "credit_enhancement": "Guarantee by Demo Guarantee Co.",
            "announcements": "发行公告 2026-11-01",
        },
    },
    {
        "code": "ZJ2026B02",
        "name": "定向融资计划 2026 第2期",
        "issuer": "Demo Urban Construction Co.",
        "product_type": "directed_financing",
        "face_value": "1000.00",
        "issue_size": 20_000,
        "expected_yield": "0.058",
        "term_days": 730,
        "maturity_date": "2028-11-20",
        "risk_level": "R2",
        "tick_size": "0.10",
        "lot_size": 10,
        "min_order_qty": 10,
        "min_order_value": "1000.00",
        "price_band_pct": "5",
        "reference_price": "1000.00",
        "max_holders": 200,
        "transferable": True,
        "disclosure": {"underlying_assets": "Municipal project receivables"},
    },
]
MEMBERS = [
    ("demo-alice", "Alice Wang", "individual", "C4"),
    ("demo-bob", "Bob Li", "individual", "C3"),
    ("demo-carol", "Carol Asset Management", "institution", "C5"),
]
ALLOCATIONS = {
    "ZJ2026A01": {"demo-alice": 5_000, "demo-carol": 20_000},
    "ZJ2026B02": {"demo-carol": 2_000},
}
ORDERS = [  # client_order_id, member, instrument, side, price, quantity
    ("demo-1", "demo-alice", "ZJ2026A01", "sell", "100.50", 100),
    ("demo-2", "demo-alice", "ZJ2026A01", "sell", "101.00", 200),
    ("demo-3", "demo-carol", "ZJ2026A01", "sell", "100.80", 300),
    ("demo-4", "demo-bob", "ZJ2026A01", "buy", "99.80", 150),
    ("demo-5", "demo-bob", "ZJ2026A01", "buy", "100.50", 20),
    ("demo-6", "demo-carol", "ZJ2026B02", "sell", "1001.00", 50),
]


def _load_state() -> dict[str, Any] | None:
    try:
        return dict(json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError):
        return None


def _credentials_work(gateway: str, state: dict[str, Any]) -> bool:
    partner = PartnerClient(gateway, state["api_key"], state["api_secret"])
    try:
        return partner.request("GET", "/v1/instruments").status_code == 200
    finally:
        partner.close()


def seed(gateway: str, admin_token: str, console: Console) -> dict[str, Any]:
    state = _load_state()
    if state is not None and _credentials_work(gateway, state):
        console.print("demo market already seeded")
        return state
    admin = StaffClient(gateway, admin_token)
    try:
        partner_body = admin.call("POST", "/v1/admin/partners", {"name": "Demo Platform"})
        operator = admin.call(
            "POST", "/v1/admin/staff-tokens", {"role": "operator", "name": "demo operator"}
        )
        auditor = admin.call(
            "POST", "/v1/admin/staff-tokens", {"role": "auditor", "name": "demo auditor"}
        )
        for product in PRODUCTS:
            response = admin.request(
                "POST", "/v1/admin/instruments", product, idempotency_key=f"demo-{product['code']}"
            )
            if response.status_code not in (200, 201, 409):
                raise ApiError(response)
        partner = PartnerClient(gateway, partner_body["api_key"], partner_body["api_secret"])
        staff = StaffClient(gateway, operator["token"])
        members: dict[str, str] = {}
        for ref, name, kind, risk in MEMBERS:
            created = partner.call(
                "POST",
                "/v1/members",
                {
                    "external_ref": ref,
                    "name": name,
                    "kind": kind,
                    "qualified": True,
                    "risk_tolerance": risk,
                },
            )
            members[ref] = created["member_id"]
            staff.call(
                "POST",
                "/v1/admin/deposits",
                {
                    "member_id": created["member_id"],
                    "amount": "1000000.00",
                    "bank_reference": f"DEMO-{created['member_id']}",
                },
            )
        for code, holders in ALLOCATIONS.items():
            response = admin.request(
                "POST",
                f"/v1/admin/instruments/{code}/allocations",
                {
                    "allocations": [
                        {"member_id": members[ref], "quantity": qty} for ref, qty in holders.items()
                    ]
                },
            )
            if response.status_code >= 400:
                console.print(
                    f"[yellow]allocation of {code} skipped: {response.json().get('code')}[/yellow]"
                )
        time.sleep(0.5)  # not synchronisation: spacing the first orders after the listing
        for client_order_id, ref, code, side, price, quantity in ORDERS:
            partner.call(
                "POST",
                "/v1/orders",
                {
                    "client_order_id": client_order_id,
                    "member_id": members[ref],
                    "instrument": code,
                    "side": side,
                    "price": price,
                    "quantity": quantity,
                    "time_in_force": "GTC",
                },
            )
        partner.close()
        staff.close()
    finally:
        admin.close()
    state = {
        "partner_id": partner_body["partner_id"],
        "api_key": partner_body["api_key"],
        "api_secret": partner_body["api_secret"],
        "operator_token": operator["token"],
        "auditor_token": auditor["token"],
        "members": members,
    }
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))
    STATE_FILE.chmod(0o600)
    console.print("demo market seeded")
    return state


def print_credentials(console: Console, state: dict[str, Any], admin_token: str) -> None:
    table = Table(title=f"demo credentials (also in {STATE_FILE})")
    table.add_column("who")
    table.add_column("credential")
    table.add_row("admin token", admin_token)
    table.add_row("operator token", state["operator_token"])
    table.add_row("auditor token", state["auditor_token"])
    table.add_row("partner API key", state["api_key"])
    table.add_row("partner API secret", state["api_secret"])
    for ref, member_id in state["members"].items():
        table.add_row(f"member {ref}", member_id)
    console.print(table)
