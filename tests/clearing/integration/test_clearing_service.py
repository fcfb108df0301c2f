"""Clearing as a running service with custody and matching, on real PostgreSQL and RabbitMQ:
fees through capture, a whole day settled and reconciled, every break kind, trades after
the roll, DAY expiry, and a clearing killed in the middle of its end-of-day run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from banksim import StatementInjection
from services.clearing.domain.bank_files import parse_instruction_file
from services.custody.verify import run_checks
from shared.contracts import system_queues
from shared.db import make_engine
from shared.messaging.broker import Broker
from shared.messaging.topology import Topology
from shared.money import format_fen, parse_fen
from tests.clearing.integration.exchange import (
    Exchange,
    mirror_bank,
    net_positions,
    recompute_fees,
)
from tests.support import env
from tests.support.databases import own_database
from tests.support.services import ServiceProcess
from tests.support.wait import wait_until

PRICE = 10_000  # 100.00


@dataclass
class Stack:
    custody: ServiceProcess
    matching: ServiceProcess
    clearing: ServiceProcess
    exchange: Exchange
    database_url: str


@pytest.fixture(scope="module")
def clearing_database_url() -> Iterator[str]:
    """This module's own database: clearing's business date and custody's start together
    here, whatever date other suites have moved the shared database's custody to."""
    with own_database("clearing") as url:
        yield url


@pytest.fixture(scope="module")
async def engine(clearing_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(clearing_database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def stack(clearing_database_url: str, broker_namespace: str) -> AsyncIterator[Stack]:
    own = {"EXCHANGE_DATABASE_URL": clearing_database_url}
    custody = ServiceProcess("custody", **own)
    matching = ServiceProcess("matching", **own)
    clearing = ServiceProcess(
        "clearing", EXCHANGE_CUSTODY_URL=custody.url, EXCHANGE_EOD_POLL_SECONDS="0.1", **own
    )
    broker = Broker(
        env.AMQP_URL,
        Topology(broker_namespace),
        connection_name="clearing-test-gateway",
        prefetch=10,
        queues=system_queues(),
    )
    broker.start()
    await broker.wait_connected(timeout=20)
    started: list[ServiceProcess] = []
    try:
        for service in (custody, matching, clearing):
            await service.start()
            started.append(service)
        async with (
            httpx.AsyncClient(base_url=custody.url, timeout=30) as custody_client,
            httpx.AsyncClient(base_url=clearing.url, timeout=30) as clearing_client,
        ):
            yield Stack(
                custody,
                matching,
                clearing,
                Exchange(custody_client, clearing_client, broker),
                clearing_database_url,
            )
    finally:
        for service in reversed(started):
            await service.stop()
        await broker.close()


async def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exchange_cli.main", *args]
    environment = env.service_env(
        EXCHANGE_CLEARING_URL=stack.clearing.url, EXCHANGE_DATABASE_URL=stack.database_url
    )
    return await asyncio.to_thread(
        subprocess.run, command, env=environment, capture_output=True, text=True, timeout=120
    )


async def ledger_verified(engine: AsyncEngine) -> None:
    failed = [c for c in await run_checks(engine) if not c.ok]
    assert not failed, failed


# --------------------------------------------------------------------------------- fees


async def custody_business_date(engine: AsyncEngine) -> date:
    async with engine.connect() as conn:
        value = (
            await conn.execute(text("SELECT business_date FROM custody.business_day WHERE id = 1"))
        ).scalar_one()
    assert isinstance(value, date)
    return value


async def test_business_date_starts_as_custodys(stack: Stack, engine: AsyncEngine) -> None:
    response = await stack.exchange.clearing.get("/internal/business-date")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "open"
    assert date.fromisoformat(body["business_date"]) == await custody_business_date(engine)


async def test_fees_through_capture(stack: Stack) -> None:
    ex = stack.exchange
    code = await ex.product()
    seller, _ = await ex.member()
    seller2, _ = await ex.member()
    buyer, _ = await ex.member()
    await ex.allocate(code, seller, 10_000)
    await ex.allocate(code, seller2, 10_000)
    await ex.deposit(buyer, 100_000_000)
    # Tiers and the boundary: 499 x 100.00 = 49,900.00; 500 x 100.00 = exactly 50,000.00;
    # 501 x 100.00 = 50,100.00. Each is one sell order and one buy order.
    for qty in (499, 500, 501):
        await ex.submit(seller, code, "SELL", PRICE, qty)
        await ex.submit(buyer, code, "BUY", PRICE, qty)
        await ex.wait_trades(code, {499: 1, 500: 2, 501: 3}[qty])
    # The sell side's cap: one sell order of 6 units filled by six buy orders (2+2+1+0+0+0).
    capped_sell = await ex.submit(seller, code, "SELL", PRICE, 6)
    for _ in range(6):
        await ex.submit(buyer, code, "BUY", PRICE, 1)
    await ex.wait_trades(code, 9)
    # The buy side's cap: four resting sell orders, one buy order sweeps them (2+2+1+0).
    for _ in range(4):
        await ex.submit(seller2, code, "SELL", PRICE, 2)
    capped_buy = await ex.submit(buyer, code, "BUY", PRICE, 8)
    trades = await ex.wait_trades(code, 13)

    by_seq = sorted(trades, key=lambda t: t["seq"])
    fees = [(t["amount"], t["buyer_fee"], t["seller_fee"]) for t in by_seq]
    assert fees[:3] == [
        ("49900.00", "2.00", "2.00"),
        ("50000.00", "5.00", "5.00"),
        ("50100.00", "5.00", "5.00"),
    ]
    sell_fills = [t for t in by_seq if t["sell_order_id"] == capped_sell]
    assert [t["seller_fee"] for t in sell_fills] == ["2.00", "2.00", "1.00", "0.00", "0.00", "0.00"]
    assert all(t["buyer_fee"] == "2.00" for t in sell_fills)
    buy_fills = [t for t in by_seq if t["buy_order_id"] == capped_buy]
    assert [t["buyer_fee"] for t in buy_fills] == ["2.00", "2.00", "1.00", "0.00"]
    assert all(t["seller_fee"] == "2.00" for t in buy_fills)
    # Every captured fee equals the independent computation.
    expected = recompute_fees(trades)
    for t in trades:
        assert (parse_fen(t["buyer_fee"]), parse_fen(t["seller_fee"])) == expected[t["trade_id"]]


# ----------------------------------------------------------- a whole day, then the bank


async def test_full_day_settles_and_reconciles(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    ex = stack.exchange
    codes = [await ex.product(), await ex.product()]
    members = [await ex.member() for _ in range(4)]
    ids = [m for m, _ in members]
    deposits = {m: 1_000_000_00 + i * 1_000_00 for i, m in enumerate(ids)}
    for m, fen in deposits.items():
        await ex.deposit(m, fen)
    for code in codes:
        await ex.allocate(code, ids[0], 5_000)
        await ex.allocate(code, ids[1], 5_000)
    withdrawn = 300_00
    withdrawal_id = await ex.withdraw(ids[3], withdrawn)
    before_units = {m: await ex.holdings(m) for m in ids}
    # Sells rest at several prices; buys sweep them across products and members.
    count = 0
    for code in codes:
        await ex.submit(ids[0], code, "SELL", 10_000, 300)
        await ex.submit(ids[1], code, "SELL", 10_100, 700)
        await ex.submit(ids[2], code, "BUY", 10_200, 600)  # two fills, price improvement
        await ex.submit(ids[3], code, "BUY", 10_100, 400)  # one fill
        await ex.submit(ids[0], code, "SELL", 9_950, 10)  # rests below nothing: no bid left
        await ex.submit(ids[3], code, "BUY", 9_950, 5)  # hits it
        count += 4
    d = await ex.business_date()
    trades: list[dict[str, Any]] = []
    for code in codes:
        trades += await ex.wait_trades(code, 4)
    assert {t["business_date"] for t in trades} == {d.isoformat()}

    run = await ex.run_eod(d)
    assert run["phase"] == "done"
    assert run["progress"]["done"] == run["progress"]["total"]
    assert await ex.business_date() == d + timedelta(days=1)

    cash_change, unit_change = net_positions(trades)
    for m in ids:
        cash = await ex.cash(m)
        expected = deposits[m] + cash_change[m] - (withdrawn if m == ids[3] else 0)
        assert cash["settled"] == expected, m
        assert cash["held"] == 0
        assert cash["pending_in"] == cash["pending_out"] == 0
        holdings = await ex.holdings(m)
        for code in codes:
            want = before_units[m].get(code, 0) + unit_change[(m, code)]
            assert holdings.get(code, 0) == want
    await ledger_verified(engine)

    report = (await ex.clearing.get(f"/internal/settlements/{d}")).json()
    mine = {r["member_id"]: r for r in report["members"] if r["member_id"] in ids}
    for m in ids:
        assert parse_fen(mine[m]["net_after_fees"], allow_negative=True) == cash_change[m]
    assert report["totals"]["trade_count"] == run["trade_count"] >= 8
    statement = (
        await ex.clearing.get(
            f"/internal/members/{ids[2]}/settlements", params={"business_date": d.isoformat()}
        )
    ).json()["items"][0]
    assert len(statement["trades"]) == 4
    assert {t["side"] for t in statement["trades"]} == {"BUY"}

    response = await ex.clearing.get(f"/internal/settlements/{d}/instructions")
    assert response.headers["content-type"].startswith("text/csv")
    instructions = parse_instruction_file(response.text, expected_date=d)
    totals = instructions.totals
    assert totals.debit_fen - totals.credit_fen == totals.withdrawal_fen >= withdrawn
    refs = {i.reference for i in instructions.instructions}
    assert withdrawal_id in refs

    # The bank applies the file; its statement reconciles with no breaks.
    bank = await mirror_bank(ex.custody, d)
    bank.apply_instructions(response.text)
    clean = bank.statement(d)
    loaded = await ex.clearing.post(f"/internal/reconciliations/{d}", content=clean)
    assert loaded.status_code == 201, loaded.text
    body = loaded.json()
    assert body["status"] == "balanced", body
    assert body["sub_sub"]["breaks"] == []
    assert body["movements"]["breaks"] == []
    assert (await ex.eod(d) or {})["status"] == "reconciled"
    assert withdrawal_id in body["withdrawals_completed"]
    withdrawal = (
        await ex.custody.get(f"/internal/members/{ids[3]}/withdrawals/{withdrawal_id}")
    ).json()
    assert withdrawal["status"] == "completed"

    # Each break kind the simulator injects, reported with its level, account and values.
    victim_member, victim_sub = members[2]
    tn_ref = next(
        i.reference
        for i in instructions.instructions
        if i.member_id == victim_member and i.kind.value == "TRADE_NET"
    )
    tn_amount = next(i.amount_fen for i in instructions.instructions if i.reference == tn_ref)
    settled_victim = (await ex.cash(victim_member))["settled"]

    async def load(statement: str) -> dict[str, Any]:
        answer = await ex.clearing.post(f"/internal/reconciliations/{d}", content=statement)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    # 总分: the master's closing balance is off.
    r = await load(bank.statement(d, StatementInjection(master_offset_fen=123)))
    assert r["status"] == "breaks"
    assert r["total_sub"]["balanced"] is False
    assert (
        parse_fen(r["total_sub"]["master_value"]) - parse_fen(r["total_sub"]["sum_of_subs"]) == 123
    )
    assert r["total_total"]["balanced"] is False
    assert r["sub_sub"]["breaks"] == []
    assert r["movements"]["breaks"] == []
    assert (await ex.eod(d) or {})["status"] == "breaks"

    # 分分: a sub-account the exchange does not know.
    r = await load(bank.statement(d, StatementInjection(unknown_accounts={"SUBX999999": 777})))
    assert r["total_sub"]["balanced"] is True
    assert r["sub_sub"]["breaks"] == [
        {
            "kind": "UNKNOWN_AT_EXCHANGE",
            "account": "SUBX999999",
            "member_id": None,
            "exchange_value": None,
            "bank_value": "7.77",
        }
    ]
    assert r["movements"]["breaks"] == []

    # 分分 + movements: a sub-account missing at the bank (its movements go with it).
    r = await load(bank.statement(d, StatementInjection(drop_accounts=frozenset({victim_sub}))))
    assert [(b["kind"], b["account"], b["member_id"]) for b in r["sub_sub"]["breaks"]] == [
        ("MISSING_AT_BANK", victim_sub, victim_member)
    ]
    assert r["sub_sub"]["breaks"][0]["exchange_value"] == format_fen(settled_victim)
    assert r["sub_sub"]["breaks"][0]["bank_value"] is None
    assert {b["kind"] for b in r["movements"]["breaks"]} == {"MISSING_AT_BANK"}
    assert {b["account"] for b in r["movements"]["breaks"]} == {victim_sub}

    # Movements: an instruction the bank did not book, and one booked with another amount.
    skipped = await mirror_bank(ex.custody, d)
    skipped.apply_instructions(response.text, skip_references=[tn_ref])
    r = await load(skipped.statement(d))
    assert r["movements"]["breaks"] == [
        {
            "kind": "MISSING_AT_BANK",
            "reference": tn_ref,
            "account": victim_sub,
            "member_id": victim_member,
            "exchange_value": format_fen(-tn_amount),
            "bank_value": None,
        }
    ]
    assert [(b["kind"], b["account"]) for b in r["sub_sub"]["breaks"]] == [
        ("AMOUNT_MISMATCH", victim_sub)
    ]
    assert r["sub_sub"]["breaks"][0]["exchange_value"] == format_fen(settled_victim)
    assert r["sub_sub"]["breaks"][0]["bank_value"] == format_fen(settled_victim + tn_amount)

    wrong = await mirror_bank(ex.custody, d)
    wrong.apply_instructions(response.text, amount_overrides={tn_ref: tn_amount + 100})
    r = await load(wrong.statement(d))
    assert r["movements"]["breaks"] == [
        {
            "kind": "AMOUNT_MISMATCH",
            "reference": tn_ref,
            "account": victim_sub,
            "member_id": victim_member,
            "exchange_value": format_fen(-tn_amount),
            "bank_value": format_fen(-tn_amount - 100),
        }
    ]

    # Movements: a booking the exchange never made.
    extra = await mirror_bank(ex.custody, d)
    extra.apply_instructions(response.text)
    ref = extra.book_unsolicited(d, victim_sub, "CREDIT", 5_00, reference="BKADJ-TEST-1")
    r = await load(extra.statement(d))
    assert r["movements"]["breaks"] == [
        {
            "kind": "MISSING_AT_EXCHANGE",
            "reference": ref,
            "account": victim_sub,
            "member_id": victim_member,
            "exchange_value": None,
            "bank_value": "5.00",
        }
    ]
    assert r["total_total"]["balanced"] is False

    # Every load is kept; the latest clean one (through `exchange recon load`) makes the
    # day reconciled again.
    path = tmp_path / "statement.csv"
    path.write_text(clean)
    loaded_cli = await run_cli(stack, "recon", "load", str(path), "--date", d.isoformat())
    assert loaded_cli.returncode == 0, loaded_cli.stdout + loaded_cli.stderr
    assert "balanced" in loaded_cli.stdout
    r = (await ex.clearing.get(f"/internal/reconciliations/{d}")).json()
    assert r["status"] == "balanced"
    history = (await ex.clearing.get(f"/internal/reconciliations/{d}/history")).json()["items"]
    assert len(history) >= 8
    latest = (await ex.clearing.get(f"/internal/reconciliations/{d}")).json()
    assert latest["reconciliation_id"] == r["reconciliation_id"]
    assert (await ex.eod(d) or {})["status"] == "reconciled"


# --------------------------------------------------------- the roll, DAY orders, restarts


async def test_trades_after_the_roll_and_day_expiry(stack: Stack, engine: AsyncEngine) -> None:
    ex = stack.exchange
    code = await ex.product()
    seller, _ = await ex.member()
    buyer, _ = await ex.member()
    await ex.allocate(code, seller, 1_000)
    await ex.deposit(buyer, 10_000_000)
    d = await ex.business_date()
    await ex.submit(seller, code, "SELL", PRICE, 10)
    await ex.submit(buyer, code, "BUY", PRICE, 10)
    await ex.wait_trades(code, 1)
    await ex.submit(buyer, code, "BUY", 9_500, 20, tif="DAY")  # rests, then expires

    async def held() -> bool:
        return (await ex.cash(buyer))["held"] == 9_500 * 20 + 500

    await wait_until(held, message="the DAY order's reservation")
    response = await ex.clearing.post("/internal/eod", json={"business_date": d.isoformat()})
    assert response.status_code == 202
    assert response.json()["status"] in ("running", "settled")
    repeat = await ex.clearing.post("/internal/eod", json={"business_date": d.isoformat()})
    assert repeat.status_code == 202
    assert repeat.json()["business_date"] == d.isoformat()
    # After the roll: a new trade belongs to D+1.
    await ex.submit(seller, code, "SELL", PRICE, 3)
    await ex.submit(buyer, code, "BUY", PRICE, 3)
    trades = await ex.wait_trades(code, 2)
    await ex.wait_settled(d)
    dates = sorted(t["business_date"] for t in trades)
    assert dates == [d.isoformat(), (d + timedelta(days=1)).isoformat()]

    async def released() -> bool:
        return (await ex.cash(buyer))["held"] == 0

    await wait_until(released, message="the expired DAY order's reservation released")
    report = (await ex.clearing.get(f"/internal/settlements/{d}")).json()
    row = next(r for r in report["members"] if r["member_id"] == buyer)
    assert row["net_cash"] == format_fen(-PRICE * 10)

    d1 = d + timedelta(days=1)
    # Staff's command: `exchange eod run --date D` follows the run to the end.
    done = await run_cli(stack, "eod", "run", "--date", d1.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "settled" in done.stdout
    assert (await ex.eod(d1) or {})["status"] == "settled"
    report1 = (await ex.clearing.get(f"/internal/settlements/{d1}")).json()
    row1 = next(r for r in report1["members"] if r["member_id"] == buyer)
    assert row1["net_cash"] == format_fen(-PRICE * 3)
    assert (await ex.holdings(buyer))[code] == 13
    await ledger_verified(engine)

    async def custody_follows() -> bool:
        return await custody_business_date(engine) == await ex.business_date()

    await wait_until(custody_follows, message="custody's business date follows clearing's")


async def test_product_listed_while_the_roll_is_in_flight(
    stack: Stack, engine: AsyncEngine
) -> None:
    """Custody lists a product on D while the shards already rolled to D+1 (its ``list``
    reaches the shard after clearing's ``roll``: two outbox streams). The book still reports
    its DayRolled D→D+1, so the run's completeness check does not wait for it forever."""
    ex = stack.exchange
    existing = await ex.product()
    d = await ex.business_date()

    async def custody_at_d() -> bool:
        return await custody_business_date(engine) == d

    await wait_until(custody_at_d, message="custody's business date is D")
    async with httpx.AsyncClient(base_url=stack.matching.url, timeout=10) as matching:

        async def book_date(code: str) -> str | None:
            response = await matching.get(f"/internal/books/{code}/ticker")
            return str(response.json()["business_date"]) if response.status_code == 200 else None

        async def existing_listed() -> bool:
            return await book_date(existing) == d.isoformat()

        await wait_until(existing_listed, message="the existing book listed on D")
        # Custody's roll is held back (its consumer waits on this row lock) so that custody
        # still lists on D after the shards rolled.
        async with engine.connect() as lock:
            transaction = await lock.begin()
            await lock.execute(text("SELECT 1 FROM custody.business_day WHERE id = 1 FOR UPDATE"))
            response = await ex.clearing.post(
                "/internal/eod", json={"business_date": d.isoformat()}
            )
            assert response.status_code == 202, response.text
            following = (d + timedelta(days=1)).isoformat()

            async def shard_rolled() -> bool:
                return await book_date(existing) == following

            await wait_until(shard_rolled, message="the shard's roll")
            late = await ex.product()
            listings = (await ex.custody.get("/internal/clearing/listings")).json()["items"]
            assert {i["instrument"]: i["listed_on"] for i in listings}[late] == d.isoformat()

            async def late_listed() -> bool:
                return await book_date(late) is not None

            await wait_until(late_listed, message="the late product's book")
            await transaction.rollback()
        run = await ex.wait_settled(d)
        assert run["status"] == "settled"
        assert await book_date(late) == following
    async with engine.connect() as conn:
        rolled = (
            await conn.execute(
                text(
                    "SELECT business_date FROM clearing.day_rolls "
                    "WHERE instrument = :i AND previous_date = :d"
                ),
                {"i": late, "d": d},
            )
        ).scalar_one()
    assert rolled == d + timedelta(days=1)
    await ledger_verified(engine)


@pytest.mark.slow
async def test_killed_clearing_resumes_and_settles_once(stack: Stack, engine: AsyncEngine) -> None:
    ex = stack.exchange
    code = await ex.product()
    seller, _ = await ex.member()
    buyer, _ = await ex.member()
    await ex.allocate(code, seller, 1_000)
    await ex.deposit(buyer, 10_000_000)
    await ex.submit(seller, code, "SELL", PRICE, 7)
    await ex.submit(buyer, code, "BUY", PRICE, 7)
    trades = await ex.wait_trades(code, 1)
    d = await ex.business_date()
    clearing = stack.clearing

    # Killed right after the roll commits (answering the trigger), then on resuming: after
    # custody applied the batch but before clearing recorded it, then after the file.
    await clearing.stop()
    await clearing.start(EXCHANGE_CRASH_AT="eod_after_roll")
    with pytest.raises(httpx.HTTPError):
        await ex.clearing.post("/internal/eod", json={"business_date": d.isoformat()})
    assert await clearing.wait_exit(60) == -9, clearing.log_tail()
    for crash_at in ("eod_settle_before_record", "eod_after_instructions"):
        clearing.spawn(EXCHANGE_CRASH_AT=crash_at)
        assert await clearing.wait_exit(60) == -9, clearing.log_tail()
    await clearing.start()
    run = await ex.wait_settled(d)
    assert run["trade_count"] == (await _trade_count(engine, d))
    async with engine.connect() as conn:
        entries = (
            await conn.execute(
                text("SELECT count(*) FROM custody.entries WHERE reference = :b"),
                {"b": f"eod-{d}"},
            )
        ).scalar_one()
    assert entries == 1
    fee = recompute_fees(trades)[trades[0]["trade_id"]][0]
    assert (await ex.cash(buyer))["settled"] == 10_000_000 - PRICE * 7 - fee
    assert (await ex.holdings(buyer))[code] == 7
    await ledger_verified(engine)


@pytest.mark.slow
async def test_killed_custody_mid_batch_settles_once(stack: Stack, engine: AsyncEngine) -> None:
    ex = stack.exchange
    code = await ex.product()
    seller, _ = await ex.member()
    buyer, _ = await ex.member()
    await ex.allocate(code, seller, 1_000)
    await ex.deposit(buyer, 10_000_000)
    await ex.submit(seller, code, "SELL", PRICE, 9)
    await ex.submit(buyer, code, "BUY", PRICE, 9)
    trades = await ex.wait_trades(code, 1)
    d = await ex.business_date()
    custody = stack.custody
    await custody.stop()
    await custody.start(EXCHANGE_CRASH_AT="settlement_mid_batch")
    response = await ex.clearing.post("/internal/eod", json={"business_date": d.isoformat()})
    assert response.status_code == 202
    assert await custody.wait_exit(60) == -9, custody.log_tail()
    run = await ex.eod(d)
    assert run is not None
    assert run["status"] == "running"  # clearing waits for custody
    await custody.start()
    await ex.wait_settled(d)
    async with engine.connect() as conn:
        entries = (
            await conn.execute(
                text("SELECT count(*) FROM custody.entries WHERE reference = :b"),
                {"b": f"eod-{d}"},
            )
        ).scalar_one()
    assert entries == 1
    fee = recompute_fees(trades)[trades[0]["trade_id"]][0]
    assert (await ex.cash(buyer))["settled"] == 10_000_000 - PRICE * 9 - fee
    assert (await ex.holdings(buyer))[code] == 9
    await ledger_verified(engine)


async def _trade_count(engine: AsyncEngine, d: date) -> int:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT count(*) FROM clearing.trades WHERE business_date = :d"), {"d": d}
            )
        ).scalar_one()
    return int(value)
