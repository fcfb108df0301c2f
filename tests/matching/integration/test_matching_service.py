"""The matching service against real RabbitMQ and PostgreSQL: orders in, events and market
data out, and exactly-once behaviour when the engine is killed at random moments."""

import random
import secrets
from collections import defaultdict
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.matching import store
from services.matching.engine import ShardEngine
from services.matching.shard import output_payload
from shared.contracts import book_stream, shard_of
from shared.db import make_session_factory
from shared.messaging.envelope import Envelope
from shared.messaging.outbox import unpublished_count_sql
from tests.support.book_commands import (
    EVENTS_TAP,
    SHARDS,
    command_broker,
    command_envelope,
    drain,
    publish_all,
    purge,
)
from tests.support.refusals import refused_inserts
from tests.support.services import ServiceProcess, metric_total
from tests.support.wait import wait_until

# Later than any date the shared test database's shards reach (other suites roll them): a
# listing on a date the shard has passed would open with the missed days' DayRolled.
BUSINESS_DATE = "2030-01-02"


def new_code(shard: int | None = None) -> str:
    while True:
        code = f"T{secrets.token_hex(4).upper()}"
        if shard is None or shard_of(code, SHARDS) == shard:
            return code


def listing(code: str) -> dict[str, Any]:
    return {
        "command": "list",
        "instrument": code,
        "tick_fen": 1,
        "lot": 1,
        "min_qty": 1,
        "band_low_fen": 9000,
        "band_high_fen": 11000,
        "reference_price_fen": 10000,
        "business_date": BUSINESS_DATE,
        "state": "trading",
    }


def new_order(
    code: str, order_id: str, member: str, side: str, price: int, qty: int, tif: str = "GTC"
) -> dict[str, Any]:
    return {
        "command": "new",
        "instrument": code,
        "order_id": order_id,
        "member_id": member,
        "side": side,
        "price_fen": price,
        "quantity": qty,
        "tif": tif,
    }


def matching_process() -> ServiceProcess:
    return ServiceProcess(
        "matching",
        EXCHANGE_MATCHING_SHARDS=str(SHARDS),
        EXCHANGE_SNAPSHOT_EVERY="200",
        EXCHANGE_MAX_BATCH="100",
    )


async def test_orders_match_and_market_data_follows(
    database_url: str, broker_namespace: str
) -> None:
    code = new_code()
    service = matching_process()
    await service.start()
    try:
        async with command_broker(broker_namespace) as broker:
            await purge(broker_namespace, EVENTS_TAP)
            commands = [
                listing(code),
                new_order(code, "s1", "mA", "SELL", 10050, 10),
                new_order(code, "s2", "mC", "SELL", 10080, 5),
                new_order(code, "b1", "mB", "BUY", 10100, 4),
            ]
            await publish_all(broker, [command_envelope(c) for c in commands])
            seen: list[Envelope] = []

            # The tap may also carry other books' events: the shared test database's shards
            # can hold commands earlier suites left behind, which this service now applies.
            async def traded() -> bool:
                seen.extend(
                    env
                    for env in await drain(broker_namespace, EVENTS_TAP)
                    if env.payload.get("instrument") == code
                )
                return any(e["type"] == "Trade" for env in seen for e in env.payload["events"])

            await wait_until(traded, message="a trade event")
        trade = next(e for env in seen for e in env.payload["events"] if e["type"] == "Trade")
        assert (trade["price_fen"], trade["quantity"], trade["maker_order_id"]) == (10050, 4, "s1")
        assert trade["taker_side"] == "BUY"
        assert all(env.stream == book_stream(code) for env in seen)
        async with httpx.AsyncClient(base_url=f"{service.url}/internal/books/{code}") as client:
            depth = (await client.get("/depth", params={"levels": 5})).json()
            assert depth["bids"] == []
            assert depth["asks"] == [["100.50", 6], ["100.80", 5]]
            ticker = (await client.get("/ticker")).json()
            assert ticker["last"] == ticker["open"] == ticker["high"] == ticker["low"] == "100.50"
            assert (ticker["volume"], ticker["turnover"]) == (4, "402.00")
            assert (ticker["best_bid"], ticker["best_ask"]) == (None, "100.50")
            trades = (await client.get("/trades")).json()["items"]
            assert [(t["price"], t["quantity"]) for t in trades] == [("100.50", 4)]
            missing = await client.get(f"{service.url}/internal/books/NOPE1234/depth")
            assert missing.status_code == 404
            assert missing.json()["code"] == "UNKNOWN_INSTRUMENT"
    finally:
        await service.stop()


def command_stream(codes: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """Seeded orders, cancels and amends over several products and members."""
    rng = random.Random(seed)
    commands = [listing(code) for code in codes]
    placed: dict[str, list[str]] = defaultdict(list)
    for n in range(count):
        code = rng.choice(codes)
        roll = rng.random()
        if roll < 0.25 and placed[code]:
            commands.append(
                {"command": "cancel", "instrument": code, "order_id": rng.choice(placed[code])}
            )
        elif roll < 0.30 and placed[code]:
            commands.append(
                {
                    "command": "amend",
                    "instrument": code,
                    "order_id": rng.choice(placed[code]),
                    "quantity": rng.randint(1, 10),
                }
            )
        else:
            order_id = f"o{seed}-{n}"
            side = rng.choice(["BUY", "SELL"])
            price = 10000 + rng.randint(-30, 30)
            tif = rng.choices(["GTC", "DAY", "IOC", "FOK"], weights=[70, 10, 10, 10])[0]
            commands.append(
                new_order(
                    code, order_id, f"m{rng.randint(1, 6)}", side, price, rng.randint(1, 20), tif
                )
            )
            placed[code].append(order_id)
    return commands


async def journal_count(engine: AsyncEngine, ids: list[str]) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM matching.journal WHERE message_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": ids},
            )
            or 0
        )


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    seed = 20261122
    rng = random.Random(seed)
    codes = [new_code(0), new_code(0), new_code(1)]
    envelopes = [command_envelope(c) for c in command_stream(codes, 2400, seed)]
    ids = [e.message_id for e in envelopes]
    service = matching_process()
    async with command_broker(broker_namespace) as broker:
        await purge(broker_namespace, EVENTS_TAP)
        await publish_all(broker, envelopes)

    # Two deterministic crashes at the worst instants, then SIGKILLs at random progress.
    for crash_at in ("matching_before_commit", "matching_after_commit"):
        service.spawn(EXCHANGE_CRASH_AT=crash_at)
        assert await service.wait_exit() == -9, service.log_tail()
    kills = sorted(rng.sample(range(200, len(envelopes) - 200), 4))
    for threshold in kills:
        service.spawn()

        async def progressed(threshold: int = threshold) -> bool:
            return await journal_count(engine, ids) >= threshold

        await wait_until(progressed, timeout=120, message=f"{threshold} commands journaled")
        await service.kill()
    await service.start()
    try:

        async def all_applied_and_published() -> bool:
            if await journal_count(engine, ids) < len(ids):
                return False
            async with engine.connect() as conn:
                unpublished = await conn.scalar(text(unpublished_count_sql("matching")))
            return unpublished == 0

        await wait_until(all_applied_and_published, timeout=180, message="all commands applied")
        async with command_broker(broker_namespace):
            published = await drain(broker_namespace, EVENTS_TAP)
        factory = make_session_factory(engine)
        async with factory() as session:
            journal: dict[int, list[store.JournalEntry]] = {}
            for shard in range(SHARDS):
                head = await store.journal_head(session, shard)
                journal[shard] = [e async for e in store.read_journal(session, shard, 0, head)]
                # The journal has no gaps, and every command was applied exactly once.
                assert [e.seq for e in journal[shard]] == list(range(1, head + 1))
            applied = [e.message_id for entries in journal.values() for e in entries]
            ours = [m for m in applied if m in set(ids)]
            assert sorted(ours) == sorted(ids)
            # Per shard, commands took effect in the order they were sent.
            for shard in range(SHARDS):
                sent = [
                    e.message_id
                    for e in envelopes
                    if shard_of(e.payload["instrument"], SHARDS) == shard
                ]
                taken = [e.message_id for e in journal[shard] if e.message_id in set(sent)]
                assert taken == sent

            # A crash-free run of the same commands: a fresh engine per shard, from zero.
            expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
            reference: dict[int, ShardEngine] = {}
            for shard, entries in journal.items():
                reference[shard] = ShardEngine(shard)
                for entry in entries:
                    for output in reference[shard].apply(
                        entry.seq, entry.command, entry.executed_at
                    ):
                        expected[output.instrument].append(output_payload(output))
            # The service's own recovery path (snapshot + replay) rebuilds the same books.
            for shard in range(SHARDS):
                rebuilt = await store.load_snapshot(session, shard, reference[shard].head)
                assert rebuilt.head > 0, "the service wrote snapshots"
                async for entry in store.read_journal(
                    session, shard, rebuilt.head, reference[shard].head
                ):
                    rebuilt.apply(entry.seq, entry.command, entry.executed_at)
                assert rebuilt.books_hash() == reference[shard].books_hash()

        # Published events: no gaps, duplicates only with identical content, and exactly what
        # the crash-free run produces.
        by_stream: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for envelope in published:
            previous = by_stream[envelope.stream].setdefault(envelope.sequence, envelope.payload)
            assert previous == envelope.payload, f"{envelope.stream}#{envelope.sequence} differs"
        for code in codes:
            stream = by_stream[book_stream(code)]
            assert sorted(stream) == list(range(1, len(stream) + 1))
            assert [stream[s] for s in sorted(stream)] == expected[code]
            assert any(e["type"] == "Trade" for p in expected[code] for e in p["events"])

        # The live service answers from the same books.
        async with httpx.AsyncClient(base_url=service.url) as client:
            for code in codes:
                depth = (
                    await client.get(f"/internal/books/{code}/depth", params={"levels": 1000})
                ).json()
                bids, asks = reference[shard_of(code, SHARDS)].books[code].depth(1000)
                assert depth["bids"] == [[f"{p // 100}.{p % 100:02d}", q] for p, q in bids]
                assert depth["asks"] == [[f"{p // 100}.{p % 100:02d}", q] for p, q in asks]
    finally:
        await service.stop()


async def commands_applied(service: ServiceProcess) -> int:
    return await metric_total(service, "exchange_matching_commands_total")


@pytest.mark.slow
async def test_a_standby_instance_takes_over_when_the_active_one_dies(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    codes = [new_code(0), new_code(1)]
    first = command_stream(codes, 600, seed=7)
    second = command_stream(codes, 600, seed=8)[len(codes) :]  # same books, no relisting
    active, standby = matching_process(), matching_process()
    await active.start()
    await standby.start()  # same queues: single active consumer keeps it waiting
    try:
        async with command_broker(broker_namespace) as broker:
            await purge(broker_namespace, EVENTS_TAP)
            batch_one = [command_envelope(c) for c in first]
            await publish_all(broker, batch_one)
            ids_one = [e.message_id for e in batch_one]

            async def first_applied() -> bool:
                return await journal_count(engine, ids_one) == len(ids_one)

            await wait_until(first_applied, timeout=60, message="first half applied")
            assert await commands_applied(active) == len(batch_one)
            assert await commands_applied(standby) == 0
            await active.kill()
            batch_two = [command_envelope(c) for c in second]
            await publish_all(broker, batch_two)
        ids = ids_one + [e.message_id for e in batch_two]

        async def all_applied() -> bool:
            return await journal_count(engine, ids) == len(ids)

        await wait_until(all_applied, timeout=60, message="the standby applied the rest")
        assert await commands_applied(standby) == len(batch_two)
        factory = make_session_factory(engine)
        async with factory() as session:
            for shard in range(SHARDS):
                head = await store.journal_head(session, shard)
                entries = [e async for e in store.read_journal(session, shard, 0, head)]
                assert [e.seq for e in entries] == list(range(1, head + 1))
                reference = ShardEngine(shard)
                for entry in entries:
                    reference.apply(entry.seq, entry.command, entry.executed_at)
                for code in codes:
                    if shard_of(code, SHARDS) != shard:
                        continue
                    bids, asks = reference.books[code].depth(1000)
                    async with httpx.AsyncClient() as client:
                        response = await client.get(
                            f"{standby.url}/internal/books/{code}/depth", params={"levels": 1000}
                        )
                    depth = response.json()
                    assert depth["sequence"] == reference.books[code].sequence
                    assert [[p, q] for p, q in depth["bids"]] == [
                        [f"{p // 100}.{p % 100:02d}", q] for p, q in bids
                    ]
                    assert [[p, q] for p, q in depth["asks"]] == [
                        [f"{p // 100}.{p % 100:02d}", q] for p, q in asks
                    ]
    finally:
        await active.stop()
        await standby.stop()


async def snapshot_heads(engine: AsyncEngine, shard: int) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT head FROM matching.snapshots WHERE shard = :s ORDER BY head"),
            {"s": shard},
        )
        return [int(r.head) for r in rows]


async def test_a_snapshot_that_cannot_be_saved_does_not_stop_the_shard(
    engine: AsyncEngine, database_url: str, broker_namespace: str
) -> None:
    """Snapshots are saved beside the shard's cycle: while every save fails, commands are
    still applied; once saves work again, the next one is stored."""
    code = new_code(0)
    first = [command_envelope(c) for c in command_stream([code], 450, seed=7)]
    second = [
        command_envelope(new_order(code, f"late{n}", "mZ", "BUY", 9000, 1)) for n in range(250)
    ]
    service = matching_process()  # a snapshot every 200 commands
    async with refused_inserts(engine, "matching.snapshots") as refusals:
        await service.start()
        try:
            before = await snapshot_heads(engine, 0)
            async with command_broker(broker_namespace) as broker:
                await publish_all(broker, first)
                ids = [e.message_id for e in first]

                async def applied(ids: list[str] = ids) -> bool:
                    return await journal_count(engine, ids) == len(ids)

                await wait_until(applied, timeout=60, message="commands applied while saves fail")
                assert await snapshot_heads(engine, 0) == before
                assert await refusals.count() > 0
                assert "shard snapshot not saved" in service.log_path.read_text(errors="replace")

                await refusals.lift()
                await publish_all(broker, second)

                async def saved() -> bool:
                    heads = await snapshot_heads(engine, 0)
                    return bool(heads) and heads[-1] > max(before, default=0)

                await wait_until(saved, timeout=60, message="a snapshot once saves work again")
        finally:
            await service.stop()


async def test_snapshots_are_compressed_with_lz4_where_the_server_has_it(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        has_lz4 = await conn.scalar(
            text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        )
        compression = await conn.scalar(
            text(
                "SELECT attcompression::text FROM pg_attribute "
                "WHERE attrelid = 'matching.snapshots'::regclass AND attname = 'state'"
            )
        )
    assert compression == ("l" if has_lz4 else "")
