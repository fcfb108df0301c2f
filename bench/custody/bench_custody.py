"""Custody benchmark: reservations per second, and one day's settlement batch against a
per-trade-transaction baseline, on a database of its own.

    .venv/bin/python bench/custody/bench_custody.py [--members 10000] [--trades 100000]

Prints the figures recorded in docs/benchmarks.md ("Custody").
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg
import orjson
from sqlalchemy import text

from services.custody import ledger, orders, registry, settlement
from services.custody.domain.journal import PostingLine
from services.custody.domain.settlement import Delta
from services.custody.schemas import (
    Allocation,
    AllocationRequest,
    InstrumentCreate,
    SettlementBatchRequest,
)
from services.custody.settings import CustodySettings
from shared.contracts import OrderSubmit
from shared.db import asyncpg_dsn, make_engine, make_session_factory, unit_of_work
from shared.ids import new_id
from shared.migrations import ensure_database, upgrade

PRODUCTS = 10
BATCH_DAY = date(2001, 1, 2)
BASELINE_DAY = date(2001, 1, 3)


def product_body(code: str, issue: int) -> InstrumentCreate:
    return InstrumentCreate(
        code=code,
        name=code,
        issuer="Bench Issuer",
        product_type="other",
        face_value="100.00",
        issue_size=issue,
        expected_yield="0.05",
        term_days=365,
        maturity_date=date(2030, 1, 1),
        risk_level="R1",
        tick_size="0.01",
        lot_size=1,
        min_order_qty=1,
        price_band_pct="10",
        reference_price="100.00",
        max_holders=1_000_000,
    )


async def setup(factory, settings, members: int) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    ids = [new_id("m") for _ in range(members)]
    async with unit_of_work(factory) as session:
        await session.execute(
            text(
                """
                INSERT INTO custody.members (member_id, partner_id, external_ref, name, kind,
                    qualified, risk_tolerance, sub_account, created_at)
                SELECT m, 'p_bench', m, 'bench', 'individual', true, 'C5',
                       'SUB' || lpad(nextval('custody.sub_account_serial')::text, 7, '0'), now()
                FROM unnest(CAST(:ids AS text[])) AS m
                """
            ),
            {"ids": ids},
        )
        accounts = await ledger.ensure_accounts(session, [("member", m, "CNY") for m in ids])
        bank = await ledger.account_id(session, ledger.BANK_ACCOUNT_KEY)
        each = 1_000_000_00
        await ledger.post(
            session,
            kind="DEPOSIT",
            reference="bench-funding",
            business_date=date(2001, 1, 1),
            postings=[PostingLine(bank, "CNY", -each * members, "DEPOSIT", "bench")]
            + [
                PostingLine(accounts[("member", m, "CNY")], "CNY", each, "DEPOSIT", "bench")
                for m in ids
            ],
        )
    codes = [f"BENCH{i:02d}" for i in range(PRODUCTS)]
    for code in codes:
        async with unit_of_work(factory) as session:
            await registry.create_instrument(session, product_body(code, members * 1000), settings)
            await registry.allocate(
                session,
                code,
                AllocationRequest(
                    allocations=[Allocation(member_id=m, quantity=1000) for m in ids]
                ),
            )
    return ids, codes


async def bench_reservations(
    factory, settings, members: list[str], codes: list[str], count: int, workers: int
) -> float:  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    work: asyncio.Queue[OrderSubmit] = asyncio.Queue()
    for i in range(count):
        order_id = new_id("o")
        work.put_nowait(
            OrderSubmit(
                order_id=order_id,
                client_order_id=order_id,
                partner_id="p_bench",
                member_id=rng.choice(members),
                instrument=codes[i % len(codes)],
                side="BUY" if i % 2 else "SELL",
                price_fen=100_00,
                quantity=1,
                time_in_force="GTC",
            )
        )

    async def worker() -> None:
        while not work.empty():
            order = work.get_nowait()
            async with unit_of_work(factory) as session:
                reason = await orders.submit(session, order, settings.matching_shards)
            assert reason is None, reason

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(workers)])
    return count / (time.perf_counter() - started)


async def make_obligations(
    factory, members: list[str], codes: list[str], trades: int, day: date, seed: int
) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Trades of one day as if the books had produced them: rows plus pending amounts."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(trades):
        buyer, seller = rng.sample(members, 2)
        rows.append(
            {
                "trade_id": new_id("t"),
                "instrument": rng.choice(codes),
                "price_fen": 100_00,
                "quantity": rng.randint(1, 5),
                "buyer_member_id": buyer,
                "seller_member_id": seller,
                "buyer_fee_fen": 200,
                "seller_fee_fen": 200,
            }
        )
    deltas: dict[tuple[str, str, str], Delta] = {}
    for t in rows:
        amount = int(t["price_fen"]) * int(t["quantity"])  # type: ignore[call-overload]
        b, s, c, q = (
            str(t["buyer_member_id"]),
            str(t["seller_member_id"]),
            str(t["instrument"]),
            int(t["quantity"]),
        )  # type: ignore[call-overload]
        deltas.setdefault(("member", b, "CNY"), Delta()).pending_out += amount + 200
        deltas.setdefault(("member", s, "CNY"), Delta()).pending_in += amount - 200
        deltas.setdefault(("member", b, c), Delta()).pending_in += q
        deltas.setdefault(("member", s, c), Delta()).pending_out += q
        deltas.setdefault(ledger.FEE_ACCOUNT_KEY, Delta()).pending_in += 400
    async with unit_of_work(factory) as session:
        ids = await ledger.ensure_accounts(session, deltas)
        await ledger.apply_deltas(session, {ids[k]: d for k, d in deltas.items()})
        cols = list(rows[0])
        await session.execute(
            text(
                f"""
                INSERT INTO custody.trades ({", ".join(cols)}, business_date, buyer_order_id,
                    seller_order_id, created_at)
                SELECT *, CAST(:d AS date), 'o', 'o', now() FROM unnest(
                    CAST(:trade_id AS text[]), CAST(:instrument AS text[]),
                    CAST(:price_fen AS bigint[]), CAST(:quantity AS bigint[]),
                    CAST(:buyer_member_id AS text[]), CAST(:seller_member_id AS text[]),
                    CAST(:buyer_fee_fen AS bigint[]), CAST(:seller_fee_fen AS bigint[]))
                """
            ),
            {"d": day, **{c: [r[c] for r in rows] for c in cols}},
        )
    return rows


async def settle_one_trade(factory, t: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """The baseline: one trade settled in its own transaction."""
    amount = int(t["price_fen"]) * int(t["quantity"])  # type: ignore[call-overload]
    b, s, c, q = (
        str(t["buyer_member_id"]),
        str(t["seller_member_id"]),
        str(t["instrument"]),
        int(t["quantity"]),
    )  # type: ignore[call-overload]
    async with unit_of_work(factory) as session:
        ids = await ledger.ensure_accounts(
            session,
            [
                ("member", b, "CNY"),
                ("member", s, "CNY"),
                ("member", b, c),
                ("member", s, c),
                ledger.FEE_ACCOUNT_KEY,
            ],
        )
        ref = str(t["trade_id"])
        await ledger.post(
            session,
            kind="SETTLEMENT_TRADE",
            reference=ref,
            business_date=BASELINE_DAY,
            postings=[
                PostingLine(ids[("member", b, "CNY")], "CNY", -(amount + 200), "TRADE", ref),
                PostingLine(ids[("member", s, "CNY")], "CNY", amount - 200, "TRADE", ref),
                PostingLine(ids[ledger.FEE_ACCOUNT_KEY], "CNY", 400, "FEE", ref),
                PostingLine(ids[("member", b, c)], c, q, "UNITS", ref),
                PostingLine(ids[("member", s, c)], c, -q, "UNITS", ref),
            ],
            extra={
                ids[("member", b, "CNY")]: Delta(pending_out=-(amount + 200)),
                ids[("member", s, "CNY")]: Delta(pending_in=-(amount - 200)),
                ids[ledger.FEE_ACCOUNT_KEY]: Delta(pending_in=-400),
                ids[("member", b, c)]: Delta(pending_in=-q),
                ids[("member", s, c)]: Delta(pending_out=-q),
            },
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--reservations", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--baseline", type=int, default=2_000)
    args = parser.parse_args()

    base = CustodySettings().database_url.rsplit("/", 1)[0]
    url = f"{base}/exchange_bench_custody"
    admin = await asyncpg.connect(asyncpg_dsn(base + "/postgres"))
    await admin.execute('DROP DATABASE IF EXISTS "exchange_bench_custody" WITH (FORCE)')
    await admin.close()
    await ensure_database(url)
    await asyncio.to_thread(upgrade, "custody", url)
    settings = CustodySettings(database_url=url)
    engine = make_engine(url, pool_size=args.workers + 2)
    factory = make_session_factory(engine)
    try:
        t0 = time.perf_counter()
        members, codes = await setup(factory, settings, args.members)
        print(
            f"setup: {args.members} members, {PRODUCTS} products in {time.perf_counter() - t0:.1f}s"
        )

        rate = await bench_reservations(
            factory, settings, members, codes, args.reservations, args.workers
        )
        print(
            f"reservations: {args.reservations} orders, {args.workers} workers: {rate:,.0f} orders/s"
        )

        rows = await make_obligations(factory, members, codes, args.trades, BATCH_DAY, 2)
        payload = orjson.dumps(
            {"batch_id": "bench-batch", "business_date": BATCH_DAY.isoformat(), "trades": rows}
        )
        t0 = time.perf_counter()
        body = SettlementBatchRequest.model_validate_json(payload)
        parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with unit_of_work(factory) as session:
            result, applied = await settlement.apply_batch(session, body, settings)
        batch_seconds = time.perf_counter() - t0
        assert applied
        batch_rate = args.trades / batch_seconds
        print(
            f"settlement batch: {args.trades:,} trades, {result['totals']['member_count']:,} members, "
            f"{result['totals']['posting_count']:,} postings in {batch_seconds:.2f}s "
            f"({batch_rate:,.0f} trades/s); parsing the {len(payload) / 1e6:.1f} MB request {parse:.2f}s"
        )
        t0 = time.perf_counter()
        async with unit_of_work(factory) as session:
            _, applied = await settlement.apply_batch(session, body, settings)
        assert not applied
        print(f"repeat of the batch (idempotent, nothing changes): {time.perf_counter() - t0:.2f}s")

        sample = await make_obligations(factory, members, codes, args.baseline, BASELINE_DAY, 3)
        t0 = time.perf_counter()
        for t in sample:
            await settle_one_trade(factory, t)
        per_trade_rate = args.baseline / (time.perf_counter() - t0)
        print(
            f"baseline, one transaction per trade: {per_trade_rate:,.0f} trades/s "
            f"(100,000 trades would take {100_000 / per_trade_rate:.0f}s); "
            f"batch is {batch_rate / per_trade_rate:.0f}x faster per trade"
        )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
