"""A settlement batch killed in the middle leaves nothing behind and applies fully on the
next run; `exchange ledger verify` (a subprocess on the test database) detects altered and
removed journal rows."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.custody.settings import CustodySettings
from shared.ids import new_id
from tests.custody.helpers import (
    allocate,
    assert_ledger_ok,
    book,
    cash_fen,
    deposit,
    new_member,
    new_product,
    past_date,
    submit,
    trade_event,
    units,
)
from tests.support import env

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "settle_harness.py"
Factory = async_sessionmaker[AsyncSession]


async def run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *args],
        env=env.service_env(**extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def day_with_trades(
    factory: Factory, settings: CustodySettings, pairs: int
) -> tuple[dict[str, object], list[str], str]:
    code = await new_product(factory, settings)
    day = past_date()
    trades: list[dict[str, object]] = []
    buyers = []
    for i in range(pairs):
        buyer, seller = await new_member(factory, settings), await new_member(factory, settings)
        buyers.append(buyer)
        await deposit(factory, buyer, 1000_00)
        await allocate(factory, code, seller, 10)
        buy, _ = await submit(factory, settings, buyer, code, "BUY", 50_00, 10)
        sell, _ = await submit(factory, settings, seller, code, "SELL", 50_00, 10)
        event = trade_event(i + 1, buy, sell, buyer, seller, 50_00, 10, day)
        await book(factory, code, [event])
        trades.append(
            {
                "trade_id": event["trade_id"],
                "instrument": code,
                "price_fen": 50_00,
                "quantity": 10,
                "buyer_member_id": buyer,
                "seller_member_id": seller,
                "buyer_fee_fen": 200,
                "seller_fee_fen": 200,
            }
        )
    batch = {"batch_id": new_id("b"), "business_date": day.isoformat(), "trades": trades}
    return batch, buyers, code


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["settlement_mid_batch", "settlement_before_commit"])
async def test_a_batch_killed_mid_way_is_all_or_nothing_and_applies_once_on_rerun(
    factory: Factory, settings: CustodySettings, engine: AsyncEngine, crash_at: str
) -> None:
    batch, buyers, code = await day_with_trades(factory, settings, 5)
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(orjson.dumps(batch))
    before = [await cash_fen(factory, b) for b in buyers]

    crashed = await run([str(HARNESS), f.name], EXCHANGE_CRASH_AT=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert [await cash_fen(factory, b) for b in buyers] == before
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT count(*) FROM custody.settlement_batches WHERE batch_id = :b"),
            {"b": batch["batch_id"]},
        )
    assert stored == 0
    await assert_ledger_ok(engine)

    first = await run([str(HARNESS), f.name])
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["applied", "5"]
    after = [await cash_fen(factory, b) for b in buyers]
    assert all(a["settled"] == 1000_00 - 500_00 - 200 for a in after)
    assert all(a["pending_out"] == 0 for a in after)
    assert (await units(factory, buyers[0], code))["settled"] == 10

    again = await run([str(HARNESS), f.name])
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["repeat", "5"]
    assert [await cash_fen(factory, b) for b in buyers] == after
    await assert_ledger_ok(engine)


async def verify_cli() -> subprocess.CompletedProcess[str]:
    return await run(["-m", "exchange_cli.main", "ledger", "verify"], COLUMNS="200")


@pytest.mark.slow
async def test_ledger_verify_detects_altered_and_removed_journal_rows(
    factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    member = await new_member(factory, settings)
    await deposit(factory, member, 123_45)
    await deposit(factory, member, 1_00)
    clean = await verify_cli()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "every check passed" in clean.stdout

    async with engine.begin() as conn:
        seq, line, amount = (
            await conn.execute(
                text(
                    """
                    SELECT p.entry_seq, p.line, p.amount FROM custody.postings p
                    JOIN custody.accounts a ON a.id = p.account_id
                    WHERE a.owner_id = :m AND p.amount = 12345
                    """
                ),
                {"m": member},
            )
        ).one()
    where = "entry_seq = :s AND line = :l"
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE custody.postings SET amount = amount + 100 WHERE {where}"),
                {"s": seq, "l": line},
            )
        altered = await verify_cli()
        assert altered.returncode == 1
        assert "hash chain" in altered.stdout
        assert f"entry {seq}" in altered.stdout
        assert "ledger verification failed" in altered.stdout
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE custody.postings SET amount = :a WHERE {where}"),
                {"a": amount, "s": seq, "l": line},
            )
    assert (await verify_cli()).returncode == 0

    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text(f"SELECT * FROM custody.postings WHERE {where}"), {"s": seq, "l": line}
            )
        ).one()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"DELETE FROM custody.postings WHERE {where}"), {"s": seq, "l": line}
            )
        removed = await verify_cli()
        assert removed.returncode == 1
        assert "hash chain" in removed.stdout
        assert "balances match postings" in removed.stdout
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO custody.postings VALUES (:entry_seq, :line, :account_id, :asset, "
                    ":amount, :kind, :reference, :business_date, :created_at)"
                ),
                dict(row._mapping),
            )

    async with engine.begin() as conn:
        head = (
            await conn.execute(text("SELECT last_seq, last_hash FROM custody.journal_head"))
        ).one()
    try:
        # a removed newest entry leaves the head pointing past the end of the journal
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE custody.journal_head SET last_seq = last_seq + 1"))
        truncated = await verify_cli()
        assert truncated.returncode == 1
        assert "entries were removed" in truncated.stdout
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE custody.journal_head SET last_seq = :s, last_hash = :h"),
                {"s": head.last_seq, "h": head.last_hash},
            )
    await assert_ledger_ok(engine)


async def test_postings_must_refer_to_existing_accounts_and_entries(
    factory: Factory, settings: CustodySettings, engine: AsyncEngine
) -> None:
    """The postings' references (checked per statement since custody_0004) refuse what a
    foreign key refused: a posting to a missing account or entry, removing an account or an
    entry that has postings, changing their ids."""
    from sqlalchemy.exc import DBAPIError

    member = await new_member(factory, settings)
    await deposit(factory, member, 10_00)
    async with engine.connect() as conn:
        seq, account = (
            await conn.execute(
                text(
                    "SELECT p.entry_seq, p.account_id FROM custody.postings p "
                    "JOIN custody.accounts a ON a.id = p.account_id "
                    "WHERE a.owner_kind = 'member' AND a.owner_id = :m"
                ),
                {"m": member},
            )
        ).one()
    insert = (
        "INSERT INTO custody.postings VALUES (:s, 99, :a, 'CNY', 1, 'X', 'x', '2001-01-01', now())"
    )
    delete_deposit = "DELETE FROM custody.deposits WHERE entry_seq = :s"

    async def run_all(statements: list[str], params: dict[str, int]) -> None:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement), params)

    for statements, params in [
        ([insert], {"s": seq, "a": -1}),
        ([insert], {"s": -1, "a": account}),
        (["UPDATE custody.postings SET account_id = -1 WHERE entry_seq = :s"], {"s": seq}),
        (["DELETE FROM custody.accounts WHERE id = :a"], {"a": account}),
        ([delete_deposit, "DELETE FROM custody.entries WHERE seq = :s"], {"s": seq}),
        (["UPDATE custody.accounts SET id = -id WHERE id = :a"], {"a": account}),
        (
            [delete_deposit, "UPDATE custody.entries SET seq = seq + 1000000 WHERE seq = :s"],
            {"s": seq},
        ),
    ]:
        with pytest.raises(DBAPIError) as raised:
            await run_all(statements, params)
        assert getattr(raised.value.orig, "sqlstate", None) == "23503", statements
        message = str(raised.value)
        assert "posting" in message or "never change" in message, message
    await assert_ledger_ok(engine)
