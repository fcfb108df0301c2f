"""Driving the real custody, matching and clearing processes the way the gateway and staff
would: custody's internal routes, `order.submit` envelopes on the broker, clearing's
internal routes; plus the independent fee and settlement arithmetic the tests compare with."""

from __future__ import annotations

import itertools
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from banksim import Bank
from shared.contracts import ORDER_SUBMIT
from shared.ids import new_id, uuid7
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import Envelope
from shared.money import format_fen, parse_fen
from tests.support.products import instrument_body
from tests.support.wait import wait_until

PARTNER = "p_clearing_test"
REFERENCE_PRICE_FEN = 10_000


@dataclass
class Exchange:
    custody: httpx.AsyncClient
    clearing: httpx.AsyncClient
    broker: Broker
    stream: str = field(default_factory=lambda: f"test-gateway-{secrets.token_hex(4)}")
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def member(self) -> tuple[str, str]:
        response = await self.custody.post(
            "/internal/members",
            json={
                "partner_id": PARTNER,
                "external_ref": new_id("x"),
                "name": "Clearing Test Member",
                "kind": "individual",
                "qualified": True,
                "risk_tolerance": "C5",
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return str(body["member_id"]), str(body["sub_account"])

    async def product(self) -> str:
        code = "C" + secrets.token_hex(4).upper()
        response = await self.custody.post("/internal/instruments", json=instrument_body(code))
        assert response.status_code == 201, response.text
        return code

    async def deposit(self, member_id: str, fen: int) -> str:
        reference = new_id("BK")
        response = await self.custody.post(
            "/internal/deposits",
            json={"member_id": member_id, "amount": format_fen(fen), "bank_reference": reference},
        )
        assert response.status_code == 201, response.text
        return reference

    async def allocate(self, code: str, member_id: str, quantity: int) -> None:
        response = await self.custody.post(
            f"/internal/instruments/{code}/allocations",
            json={"allocations": [{"member_id": member_id, "quantity": quantity}]},
        )
        assert response.status_code == 201, response.text

    async def withdraw(self, member_id: str, fen: int) -> str:
        response = await self.custody.post(
            f"/internal/members/{member_id}/withdrawals", json={"amount": format_fen(fen)}
        )
        assert response.status_code == 202, response.text
        return str(response.json()["withdrawal_id"])

    async def submit(
        self,
        member_id: str,
        code: str,
        side: str,
        price_fen: int,
        quantity: int,
        tif: str = "GTC",
    ) -> str:
        order_id = new_id("o")
        payload = {
            "order_id": order_id,
            "client_order_id": order_id,
            "partner_id": PARTNER,
            "member_id": member_id,
            "instrument": code,
            "side": side,
            "price_fen": price_fen,
            "quantity": quantity,
            "time_in_force": tif,
        }
        envelope = Envelope(
            str(uuid7()), ORDER_SUBMIT, "test-gateway", self.stream, next(self._seq), payload
        )
        await self.broker.publish([OutgoingMessage.from_envelope(ORDER_SUBMIT, envelope)])
        return order_id

    async def trades(self, **params: str) -> list[dict[str, Any]]:
        response = await self.clearing.get("/internal/trades", params=params)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def wait_trades(self, code: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []

        async def captured() -> bool:
            seen[:] = await self.trades(instrument=code)
            return len(seen) >= count

        await wait_until(captured, timeout=timeout, message=f"{count} trades of {code}")
        assert len(seen) == count, seen
        return seen

    async def business_date(self) -> date:
        response = await self.clearing.get("/internal/business-date")
        assert response.status_code == 200, response.text
        return date.fromisoformat(response.json()["business_date"])

    async def run_eod(self, business_date: date, timeout: float = 60) -> dict[str, Any]:
        response = await self.clearing.post(
            "/internal/eod", json={"business_date": business_date.isoformat()}
        )
        assert response.status_code == 202, response.text
        return await self.wait_settled(business_date, timeout)

    async def eod(self, business_date: date) -> dict[str, Any] | None:
        try:
            response = await self.clearing.get(f"/internal/eod/{business_date}")
        except httpx.HTTPError:
            return None
        return dict(response.json()) if response.status_code == 200 else None

    async def wait_settled(self, business_date: date, timeout: float = 60) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def settled() -> bool:
            run = await self.eod(business_date)
            if run is not None:
                last.update(run)
                assert run["status"] != "failed", run
            return bool(run and run["status"] == "settled")

        await wait_until(settled, timeout=timeout, message=f"EOD {business_date} settled")
        return last

    async def cash(self, member_id: str) -> dict[str, int]:
        body = (await self.custody.get(f"/internal/members/{member_id}/balances")).json()
        return {k: parse_fen(v) for k, v in body["cash"].items()}

    async def holdings(self, member_id: str) -> dict[str, int]:
        body = (await self.custody.get(f"/internal/members/{member_id}/balances")).json()
        return {h["instrument"]: int(h["settled"]) for h in body["holdings"]}


# ----------------------------------------------------------------- independent arithmetic


def expected_fee(amount_fen: int, already_fen: int) -> int:
    """The default schedule written out again: 2.00 below 50,000.00, else 5.00; 5.00 per order."""
    tier = 200 if amount_fen < 5_000_000 else 500
    return max(0, min(tier, 500 - already_fen, amount_fen))


def recompute_fees(trades: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """trade_id -> (buyer fee, seller fee), from trades in book order."""
    charged: dict[str, int] = defaultdict(int)
    out: dict[str, tuple[int, int]] = {}
    for t in sorted(trades, key=lambda t: (t["instrument"], t["seq"])):
        amount = parse_fen(t["price"]) * int(t["quantity"])
        buy = expected_fee(amount, charged[t["buy_order_id"]])
        sell = expected_fee(amount, charged[t["sell_order_id"]])
        charged[t["buy_order_id"]] += buy
        charged[t["sell_order_id"]] += sell
        out[t["trade_id"]] = (buy, sell)
    return out


def net_positions(
    trades: list[dict[str, Any]],
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Per member cash change (sales − purchases − fees) and per (member, product) units."""
    fees = recompute_fees(trades)
    cash: dict[str, int] = defaultdict(int)
    units: dict[tuple[str, str], int] = defaultdict(int)
    for t in trades:
        amount = parse_fen(t["price"]) * int(t["quantity"])
        buyer_fee, seller_fee = fees[t["trade_id"]]
        cash[t["buyer_member_id"]] -= amount + buyer_fee
        cash[t["seller_member_id"]] += amount - seller_fee
        units[(t["buyer_member_id"], t["instrument"])] += int(t["quantity"])
        units[(t["seller_member_id"], t["instrument"])] -= int(t["quantity"])
    return cash, units


# ----------------------------------------------------------------------- the bank's side


async def mirror_bank(custody: httpx.AsyncClient, business_date: date) -> Bank:
    """A simulated bank that holds what the custody bank would: every sub-account with its
    balance at the end of the previous day, and the deposit notices of the day."""
    bank = Bank()
    previous = business_date - timedelta(days=1)
    accounts = (
        await custody.get(
            "/internal/accounts", params={"asset": "CNY", "as_of": previous.isoformat()}
        )
    ).json()["items"]
    for a in accounts:
        if a["member_id"]:
            bank.open_account(a["sub_account"], a["member_id"])
        opening = parse_fen(a["settled"])
        if opening > 0:
            bank.deposit(previous, a["sub_account"], opening, f"OPEN-{a['sub_account']}")
    moves = (
        await custody.get(
            "/internal/clearing/cash-movements",
            params={"business_date": business_date.isoformat()},
        )
    ).json()["items"]
    for m in moves:
        if m["kind"] == "DEPOSIT":
            bank.deposit(business_date, m["sub_account"], parse_fen(m["amount"]), m["reference"])
    return bank
