"""End of day through the real services: trade capture (trades/s), the EOD run from trigger
to settled with its phase breakdown, and reconciliation of a statement of every sub-account.

Real clearing and custody processes (uvicorn), real PostgreSQL (database
``exchange_bench_eod``) and RabbitMQ (prefix ``bench-eod-perf-<random>``). Untimed setup:

* custody, in process through its own modules: members (``--accounts`` sub-accounts, funded
  on D-1), ``--products`` products listed on D and allocated to the ``--members`` trading
  members, and the day's obligations (custody.trades and the pending amounts on the
  accounts) as custody's fill processing leaves them;
* clearing, through the service: the same trades as ``book.events`` envelopes (one book
  command's output per envelope, bundled per book as the outbox relay bundles them),
  published into clearing's ``clearing.book`` queue, captured by the running consumer
  (capture throughput is timed here).

Timed: ``exchange eod run --date D`` (the staff CLI) until it reports settled; the books'
DayRolled answers to the roll are published right after the trigger, as the shards would.
Then the bank side (banksim) books the instruction file and writes the statement, and
``exchange recon load FILE --date D`` is timed.

    .venv/bin/python -m bench.clearing.bench_eod --trades 1000000 --members 10000 \
        --products 50 --accounts 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
from sqlalchemy import text

from banksim import Bank
from services.custody import ledger, registry
from services.custody.domain.journal import PostingLine
from services.custody.domain.settlement import Delta
from services.custody.schemas import InstrumentCreate
from services.custody.settings import CustodySettings
from shared.clock import utc_now
from shared.contracts import BOOK_EVENTS, book_stream, system_queues
from shared.db import asyncpg_dsn, make_engine, make_session_factory, unit_of_work
from shared.fees import DEFAULT_FEE_SCHEDULE
from shared.ids import new_id, uuid7
from shared.messaging.broker import Broker, OutgoingMessage, bundle
from shared.messaging.envelope import Envelope
from shared.messaging.topology import Topology
from shared.migrations import ensure_database, upgrade_all
from shared.money import parse_fen
from tests.support.broker_admin import delete_broker_namespace
from tests.support.services import ServiceProcess

BASE = os.environ.get("EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
AMQP = os.environ.get("EXCHANGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PRICE = 10_000
BUNDLE = 100  # the outbox relay's bundles: consecutive messages of one book


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


class Day:
    """A day of trades as the books would produce them, with each side's fee."""

    def __init__(self, trades: int, members: list[str], codes: list[str], seed: int = 5) -> None:
        rng = random.Random(seed)
        schedule = DEFAULT_FEE_SCHEDULE
        charged: dict[str, int] = {}
        open_orders: dict[tuple[str, str, str], str] = {}
        self.rows: list[tuple[Any, ...]] = []  # custody.trades columns

        def order(member: str, code: str, side: str) -> str:
            key = (member, code, side)
            found = open_orders.get(key)
            if found is None or rng.random() < 0.5:  # about two fills per order
                found = open_orders[key] = new_id("o")
            return found

        for _ in range(trades):
            code = codes[rng.randrange(len(codes))]
            buyer, seller = rng.sample(members, 2)
            price = PRICE + rng.randint(-50, 50)
            quantity = rng.randint(1, 5)
            buy_order, sell_order = order(buyer, code, "BUY"), order(seller, code, "SELL")
            amount = price * quantity
            buyer_fee = schedule.trade_fee_fen(amount, charged.get(buy_order, 0))
            seller_fee = schedule.trade_fee_fen(amount, charged.get(sell_order, 0))
            charged[buy_order] = charged.get(buy_order, 0) + buyer_fee
            charged[sell_order] = charged.get(sell_order, 0) + seller_fee
            self.rows.append(
                (
                    new_id("t"),
                    code,
                    price,
                    quantity,
                    buyer,
                    seller,
                    buy_order,
                    sell_order,
                    buyer_fee,
                    seller_fee,
                    "BUY" if rng.random() < 0.5 else "SELL",
                )
            )


async def setup_custody(
    url: str, settings: CustodySettings, accounts: int, trading: int, codes: list[str], day: date
) -> list[str]:
    engine = make_engine(url, pool_size=2)
    factory = make_session_factory(engine)
    members = [f"m{i:06d}" for i in range(accounts)]
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
            {"ids": members},
        )
        ids = await ledger.ensure_accounts(session, [("member", m, "CNY") for m in members])
        bank = await ledger.account_id(session, ledger.BANK_ACCOUNT_KEY)
        each = 10_000_000_00
        await ledger.post(
            session,
            kind="DEPOSIT",
            reference="bench-funding",
            business_date=day - timedelta(days=1),
            postings=[PostingLine(bank, "CNY", -each * accounts, "DEPOSIT", "bench-funding")]
            + [
                PostingLine(ids[("member", m, "CNY")], "CNY", each, "DEPOSIT", "bench-funding")
                for m in members
            ],
        )
    for code in codes:
        async with unit_of_work(factory) as session:
            await registry.create_instrument(session, product_body(code, trading * 1000), settings)
            # registry.allocate's ledger effect, set-based (it checks members one by one).
            issuer = await ledger.account_id(session, ("issuer", code, code))
            held = await ledger.ensure_accounts(
                session, [("member", m, code) for m in members[:trading]]
            )
            reference = f"bench-allocation-{code}"
            await ledger.post(
                session,
                kind="ALLOCATION",
                reference=reference,
                business_date=day,
                postings=[PostingLine(issuer, code, -1000 * trading, "ALLOCATION", reference)]
                + [PostingLine(i, code, 1000, "ALLOCATION", reference) for i in held.values()],
            )
            await ledger.refresh_holder_counts(session, [code])
    await engine.dispose()
    return members[:trading]


async def load_obligations(url: str, day: Day, business_date: date) -> None:
    """custody.trades and the pending amounts its fill processing leaves on the accounts."""
    engine = make_engine(url, pool_size=2)
    factory = make_session_factory(engine)
    deltas: dict[tuple[str, str, str], Delta] = {}
    fee_total = 0
    for t in day.rows:
        _, code, price, qty, buyer, seller, _, _, bfee, sfee, _ = t
        amount = price * qty
        deltas.setdefault(("member", buyer, "CNY"), Delta()).pending_out += amount + bfee
        deltas.setdefault(("member", seller, "CNY"), Delta()).pending_in += amount - sfee
        deltas.setdefault(("member", buyer, code), Delta()).pending_in += qty
        deltas.setdefault(("member", seller, code), Delta()).pending_out += qty
        fee_total += bfee + sfee
    deltas.setdefault(ledger.FEE_ACCOUNT_KEY, Delta()).pending_in += fee_total
    async with unit_of_work(factory) as session:
        ids = await ledger.ensure_accounts(session, deltas)
        await ledger.apply_deltas_bulk(session, {ids[k]: d for k, d in deltas.items()})
        driver = await ledger.driver_connection(session)
        now = utc_now()
        await driver.copy_records_to_table(
            "trades",
            schema_name="custody",
            columns=[
                "trade_id",
                "instrument",
                "business_date",
                "price_fen",
                "quantity",
                "buyer_member_id",
                "seller_member_id",
                "buyer_order_id",
                "seller_order_id",
                "buyer_fee_fen",
                "seller_fee_fen",
                "created_at",
            ],
            records=[
                (t[0], t[1], business_date, t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], now)
                for t in day.rows
            ],
        )
    await engine.dispose()


def book_messages(
    day: Day, business_date: date, seed: int = 9
) -> tuple[list[OutgoingMessage], dict[str, int]]:
    """The books' outputs: per book, envelopes of one to three trades (a taker sweeping
    makers), each trade with its two OrderFilled events; bundled per book."""
    rng = random.Random(seed)
    by_book: dict[str, list[tuple[Any, ...]]] = {}
    for t in day.rows:
        by_book.setdefault(t[1], []).append(t)
    messages: list[OutgoingMessage] = []
    last: dict[str, int] = {}
    executed_at = f"{business_date.isoformat()}T10:00:00+00:00"
    for code, rows in sorted(by_book.items()):
        book_seq = stream_seq = 0
        i = 0
        while i < len(rows):
            take = rows[i : i + rng.randint(1, 3)]
            i += len(take)
            events: list[dict[str, Any]] = []
            for t in take:
                trade_id, _, price, qty, buyer, seller, buy_order, sell_order, _, _, taker = t
                maker, taker_order = (
                    (sell_order, buy_order) if taker == "BUY" else (buy_order, sell_order)
                )
                maker_m, taker_m = (seller, buyer) if taker == "BUY" else (buyer, seller)
                book_seq += 1
                events.append(
                    {
                        "type": "Trade",
                        "seq": book_seq,
                        "trade_id": trade_id,
                        "maker_order_id": maker,
                        "taker_order_id": taker_order,
                        "maker_member_id": maker_m,
                        "taker_member_id": taker_m,
                        "taker_side": taker,
                        "price_fen": price,
                        "quantity": qty,
                        "business_date": business_date.isoformat(),
                    }
                )
                for order_id in (maker, taker_order):
                    book_seq += 1
                    events.append(
                        {
                            "type": "OrderFilled",
                            "seq": book_seq,
                            "order_id": order_id,
                            "filled_qty": qty,
                            "remaining_qty": 0,
                        }
                    )
            stream_seq += 1
            payload = {"instrument": code, "executed_at": executed_at, "events": events}
            envelope = Envelope(
                str(uuid7()), BOOK_EVENTS, "matching", book_stream(code), stream_seq, payload
            )
            messages.append(OutgoingMessage.from_envelope("clearing.book", envelope))
        last[code] = stream_seq
    return messages, last


async def bulk_capture(url: str, day: Day, business_date: date) -> dict[str, int]:
    """What capture would store (trades with fees, orders' fee totals), by COPY; each book's
    stream then starts at its DayRolled (sequence 1)."""
    executed_at = datetime.fromisoformat(f"{business_date.isoformat()}T10:00:00+00:00")
    records = []
    fees: dict[str, list[Any]] = {}
    seqs: dict[str, int] = {}
    for t in day.rows:
        trade_id, code, price, qty, buyer, seller, bo, so, bfee, sfee, taker = t
        seqs[code] = seqs.get(code, 0) + 1
        records.append(
            (
                trade_id,
                code,
                business_date,
                seqs[code],
                0,
                price,
                qty,
                price * qty,
                buyer,
                seller,
                bo,
                so,
                taker,
                bfee,
                sfee,
                executed_at,
            )
        )
        for order, member, side, fee in ((bo, buyer, "BUY", bfee), (so, seller, "SELL", sfee)):
            row = fees.setdefault(order, [member, side, 0, 0])
            row[2] += fee
            row[3] += 1
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.copy_records_to_table(
            "trades",
            schema_name="clearing",
            columns=[
                "trade_id",
                "instrument",
                "business_date",
                "book_seq",
                "stream_seq",
                "price_fen",
                "quantity",
                "amount_fen",
                "buyer_member_id",
                "seller_member_id",
                "buy_order_id",
                "sell_order_id",
                "taker_side",
                "buyer_fee_fen",
                "seller_fee_fen",
                "executed_at",
            ],
            records=records,
        )
        await conn.copy_records_to_table(
            "order_fees",
            schema_name="clearing",
            columns=["order_id", "member_id", "side", "fees_fen", "fills"],
            records=[(o, *v) for o, v in fees.items()],
        )
        await conn.execute("ANALYZE clearing.trades")
    finally:
        await conn.close()
    return {code: 0 for code in seqs}


def roll_messages(last: dict[str, int], business_date: date) -> list[OutgoingMessage]:
    following = business_date + timedelta(days=1)
    out = []
    for code, seq in sorted(last.items()):
        payload = {
            "instrument": code,
            "executed_at": f"{following.isoformat()}T00:00:00+00:00",
            "events": [
                {
                    "type": "DayRolled",
                    "seq": 10**9,
                    "previous_date": business_date.isoformat(),
                    "business_date": following.isoformat(),
                }
            ],
        }
        envelope = Envelope(
            str(uuid7()), BOOK_EVENTS, "matching", book_stream(code), seq + 1, payload
        )
        out.append(OutgoingMessage.from_envelope("clearing.book", envelope))
    return out


async def publish_to_queue(prefix: str, messages: list[OutgoingMessage]) -> None:
    """Into clearing's book queue only (the default exchange): custody's side of these fills
    is its bulk-loaded obligations, and nobody else should see them."""
    queue = f"{prefix}.clearing.book"
    connection = await aio_pika.connect_robust(AMQP)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        for chunk_start in range(0, len(messages), 2000):
            chunk = bundle(messages[chunk_start : chunk_start + 2000], BUNDLE)
            await asyncio.gather(
                *[
                    exchange.publish(
                        aio_pika.Message(
                            body=m.body,
                            message_id=m.message_id,
                            type=m.type,
                            content_type=m.content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for m in chunk
                ]
            )


async def scalar(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def cli(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exchange_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stdout}\n{done.stderr}")
    return seconds, done.stdout


async def phase_breakdown(url: str, day: date) -> tuple[float, list[tuple[str, float]]]:
    """(trigger to settled, each phase's seconds), from the run's start (the trigger's
    transaction) and the ``eod.phase`` audit rows (each phase's end, wall clock)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        started = await conn.fetchval(
            "SELECT started_at FROM clearing.eod_runs WHERE business_date = $1", day
        )
        rows = await conn.fetch(
            "SELECT detail->>'phase', detail->>'ended_at' FROM clearing.audit "
            "WHERE action = 'eod.phase' AND business_date = $1 ORDER BY id",
            day,
        )
    finally:
        await conn.close()
    out: list[tuple[str, float]] = []
    previous = started
    for phase, ended in rows:
        end = datetime.fromisoformat(ended.replace("Z", "+00:00"))
        out.append((phase, (end - previous).total_seconds()))
        previous = end
    return (previous - started).total_seconds(), out


async def statement_file(custody: httpx.AsyncClient, clearing: httpx.AsyncClient, day: date) -> str:
    """The bank's statement of D: every sub-account's opening balance, D's deposits, and the
    instruction file booked (banksim)."""
    bank = Bank()
    previous = day - timedelta(days=1)
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
    instructions = (await clearing.get(f"/internal/settlements/{day}/instructions")).text
    bank.apply_instructions(instructions)
    return bank.statement(day)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--database", default="exchange_bench_eod")
    parser.add_argument("--log-slow-ms", type=int, default=0)
    parser.add_argument(
        "--capture-only", action="store_true", help="measure trade capture, then stop"
    )
    parser.add_argument(
        "--bulk-capture",
        action="store_true",
        help="load clearing's trades and order fees with COPY instead of capturing them "
        "through the consumer (to iterate on the EOD run; capture is not measured)",
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="the baseline: capture one message at a time (EXCHANGE_CAPTURE_BATCH=false)",
    )
    args = parser.parse_args()
    assert args.accounts >= args.members

    url = f"{BASE}/{args.database}"
    prefix = f"bench-eod-perf-{secrets.token_hex(3)}"
    admin = await asyncpg.connect(asyncpg_dsn(BASE + "/postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.close()
    await ensure_database(url)
    await asyncio.to_thread(upgrade_all, url)
    if args.log_slow_ms:  # statements slower than this go to PostgreSQL's log
        admin = await asyncpg.connect(asyncpg_dsn(BASE + "/postgres"))
        await admin.execute(
            f'ALTER DATABASE "{args.database}" SET log_min_duration_statement = {args.log_slow_ms}'
        )
        await admin.close()
    day = await scalar(url, "SELECT business_date FROM clearing.business_day WHERE id = 1")
    assert day == await scalar(url, "SELECT business_date FROM custody.business_day WHERE id = 1")
    common = {
        "EXCHANGE_DATABASE_URL": url,
        "EXCHANGE_BROKER_PREFIX": prefix,
        "EXCHANGE_AMQP_URL": AMQP,
        "EXCHANGE_LOG_LEVEL": "INFO",
        "EXCHANGE_CAPTURE_BATCH": "false" if args.one_by_one else "true",
    }
    settings = CustodySettings(database_url=url, broker_prefix=prefix)
    codes = [f"EOD{i:03d}" for i in range(args.products)]
    print(
        f"EOD bench: {args.trades:,} trades, {args.members:,} trading members of "
        f"{args.accounts:,} sub-accounts, {args.products} products; D = {day}; db {args.database}"
    )
    t0 = time.perf_counter()
    if args.capture_only:  # custody is not involved
        trading = [f"m{i:06d}" for i in range(args.members)]
    else:
        trading = await setup_custody(url, settings, args.accounts, args.members, codes, day)
    the_day = Day(args.trades, trading, codes)
    if not args.capture_only:
        await load_obligations(url, the_day, day)
    messages, last = ([], {}) if args.bulk_capture else book_messages(the_day, day)
    print(
        f"setup (untimed): custody state and {len(messages):,} book envelopes in {time.perf_counter() - t0:.1f} s"
    )

    clearing = ServiceProcess("clearing", **common)
    custody = ServiceProcess("custody", **common)
    common_env = {
        **os.environ,
        **common,
        "EXCHANGE_CLEARING_URL": clearing.url,
        "EXCHANGE_LOG_FORMAT": "console",
    }
    clearing.extra_env.update(EXCHANGE_CUSTODY_URL=custody.url, EXCHANGE_EOD_POLL_SECONDS="0.05")
    broker = Broker(
        AMQP, Topology(prefix), connection_name="bench-eod", prefetch=10, queues=system_queues()
    )
    broker.start()
    await broker.wait_connected(timeout=20)  # declares every queue
    try:
        await clearing.start()
        # ---------------------------------------------------------------- capture
        if args.bulk_capture:
            last = await bulk_capture(url, the_day, day)
            messages = []
        t0 = time.perf_counter()
        publisher = asyncio.create_task(publish_to_queue(prefix, messages))
        while True:
            count = await scalar(url, "SELECT count(*) FROM clearing.trades")
            if count >= args.trades:
                break
            if publisher.done() and publisher.exception():
                raise publisher.exception()  # type: ignore[misc]
            await asyncio.sleep(0.2)
        capture = time.perf_counter() - t0
        await publisher
        if not args.bulk_capture:
            print(
                f"capture: {args.trades:,} trades in {len(messages):,} envelopes through the "
                f"clearing.book consumer: {capture:.1f} s = {args.trades / capture:,.0f} trades/s"
            )
        if args.capture_only:
            return
        await custody.start()
        # -------------------------------------------------------------------- EOD
        async with (
            httpx.AsyncClient(base_url=clearing.url, timeout=600) as clearing_client,
            httpx.AsyncClient(base_url=custody.url, timeout=600) as custody_client,
        ):
            run_cli = asyncio.create_task(cli(common_env, "eod", "run", "--date", day.isoformat()))

            async def rolled() -> bool:
                response = await clearing_client.get(f"/internal/eod/{day}")
                return response.status_code == 200

            while not await rolled():
                await asyncio.sleep(0.05)
            # The shards' answer to the roll: each book's DayRolled, after its last trade.
            await publish_to_queue(prefix, roll_messages(last, day))
            eod_seconds, _ = await run_cli
            total, phases = await phase_breakdown(url, day)
            print(
                f"EOD: trigger to settled {total:.1f} s "
                f"(`exchange eod run --date {day}`: {eod_seconds:.1f} s, polling every 0.5 s)"
            )
            for phase, seconds in phases:
                print(f"  {phase:<13} {seconds:6.2f} s")
            run = (await clearing_client.get(f"/internal/eod/{day}")).json()
            assert run["status"] == "settled", run
            print(f"  trade_count {run['trade_count']:,}, fees {run['fee_total']}")
            entries = await scalar(
                url, "SELECT count(*) FROM custody.entries WHERE reference = $1", f"eod-{day}"
            )
            assert entries == 1, entries
            # ---------------------------------------------------------- reconciliation
            statement = await statement_file(custody_client, clearing_client, day)
            path = Path(tempfile.gettempdir()) / f"bench-eod-statement-{day}.csv"
            path.write_text(statement)
            # Timed at the HTTP call first (the first load: cold caches), then through the
            # staff CLI (the same file again: every load is kept), which adds its start-up.
            t0 = time.perf_counter()
            first = await clearing_client.post(
                f"/internal/reconciliations/{day}",
                content=path.read_bytes(),
                headers={"Content-Type": "text/csv"},
            )
            assert first.status_code == 201, first.text[:400]
            print(
                f"reconciliation of {args.accounts:,} sub-accounts ({path.stat().st_size / 1e6:.1f} MB "
                f"statement): POST /internal/reconciliations {time.perf_counter() - t0:.1f} s, "
                f"{first.json()['status']}"
            )
            recon_seconds, recon_out = await cli(
                common_env, "recon", "load", str(path), "--date", day.isoformat()
            )
            status = "balanced" if "balanced" in recon_out else recon_out[-400:]
            print(f"  again with `exchange recon load`: {recon_seconds:.1f} s (CLI), {status}")
    finally:
        await custody.stop()
        await clearing.stop()
        await broker.close()
        await delete_broker_namespace(prefix)


if __name__ == "__main__":
    asyncio.run(main())
