"""Durable matching service benchmark: commands through RabbitMQ into the engine and out as
persisted, published events; latency at fixed offered rates; restart time with many resting
orders. Every figure is set against a baseline measured in the same run.

    .venv/bin/python -m bench.matching_service.run [--ops 30000] [--resting 100000]
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
from rich.console import Console
from rich.progress import Progress

from bench.matching_book.stream import CANCEL, generate
from services.matching.engine import ShardEngine
from shared.clock import rfc3339, utc_now
from shared.contracts import BOOK_COMMAND, shard_of, shard_routing_key, system_queues
from shared.db import asyncpg_dsn
from shared.ids import uuid7
from shared.messaging.broker import Broker, OutgoingMessage, bundle
from shared.messaging.envelope import Envelope
from shared.messaging.outbox import unpublished_count_sql
from shared.messaging.topology import QueueSpec, Topology
from shared.migrations import upgrade_all
from tests.support.broker_admin import delete_broker_namespace

console = Console()
BASE_URL = os.environ.get(
    "EXCHANGE_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"
)
AMQP_URL = os.environ.get("EXCHANGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SHARDS = 2
TAP = QueueSpec("bench.tap", ("book.#",))
ROUND_TRIP = QueueSpec("bench.roundtrip", ("bench.roundtrip",))


def codes_on_shards(tag: str) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        code = f"B{tag}{n:04d}"[:16]
        found.setdefault(shard_of(code, SHARDS), code)
        n += 1
    return [found[s] for s in range(SHARDS)]


def listing(code: str) -> dict[str, Any]:
    return {
        "command": "list",
        "instrument": code,
        "tick_fen": 1,
        "lot": 1,
        "min_qty": 1,
        "band_low_fen": 50_000,
        "band_high_fen": 150_000,
        "reference_price_fen": 100_000,
        "business_date": "2026-11-20",
        "state": "trading",
    }


def book_commands(code: str, n_ops: int, seed: int, n_preload: int = 1000) -> list[dict[str, Any]]:
    """The in-process book benchmark's stream, as book commands for one product."""
    stream = generate(n_ops, seed=seed, n_preload=n_preload)
    out = []
    for kind, _idx, is_buy, price, qty, sid in [*stream.preload, *stream.ops]:
        order_id = f"{code}-{sid}"
        if kind == CANCEL:
            out.append({"command": "cancel", "instrument": code, "order_id": order_id})
        else:
            out.append(
                {
                    "command": "new",
                    "instrument": code,
                    "order_id": order_id,
                    "member_id": f"m{_idx % 50}",
                    "side": "BUY" if is_buy else "SELL",
                    "price_fen": price,
                    "quantity": qty,
                    "tif": "GTC",
                }
            )
    return out


def interleave(*lists: list[dict[str, Any]], block: int = 50) -> list[dict[str, Any]]:
    """Products' streams merged in blocks, as a producer that writes each batch of
    commands grouped by shard would send them."""
    out: list[dict[str, Any]] = []
    for start in range(0, max(len(s) for s in lists), block):
        for stream in lists:
            out.extend(stream[start : start + block])
    return out


def message(payload: dict[str, Any]) -> OutgoingMessage:
    envelope = Envelope(str(uuid7()), BOOK_COMMAND, "bench", "bench", 1, payload)
    return OutgoingMessage.from_envelope(
        shard_routing_key(shard_of(payload["instrument"], SHARDS)), envelope
    )


class Service:
    def __init__(self, database_url: str, prefix: str, port: int) -> None:
        self.port = port
        self.env = dict(
            os.environ,
            EXCHANGE_DATABASE_URL=database_url,
            EXCHANGE_BROKER_PREFIX=prefix,
            EXCHANGE_MATCHING_PORT=str(port),
            EXCHANGE_MATCHING_SHARDS=str(SHARDS),
            EXCHANGE_LOG_FORMAT="console",
            EXCHANGE_SNAPSHOT_EVERY="20000",
        )
        self.log = Path(tempfile.gettempdir()) / f"bench-matching-{os.getpid()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> float:
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "services.matching.app:create_app",
                    "--factory",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (
                        await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


async def journal_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM matching.journal"))


async def unpublished(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(unpublished_count_sql("matching")))


async def publish(broker: Broker, payloads: list[dict[str, Any]], chunk: int = 1000) -> None:
    """Publish as custody's outbox relay does: runs of same-shard commands in bundles."""
    for start in range(0, len(payloads), chunk):
        await broker.publish(bundle([message(p) for p in payloads[start : start + chunk]], 200))


def in_process_rate(payloads: list[dict[str, Any]]) -> float:
    engines = {s: ShardEngine(s) for s in range(SHARDS)}
    started = time.perf_counter()
    stamp = rfc3339(utc_now())
    for payload in payloads:
        engine = engines[shard_of(payload["instrument"], SHARDS)]
        engine.apply(engine.head + 1, payload, stamp)
    return len(payloads) / (time.perf_counter() - started)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": ordered[-1] * 1000,
    }


async def offered_load(
    broker: Broker,
    channel: aio_pika.abc.AbstractChannel,
    topology: Topology,
    rate: int,
    seconds: float,
    payloads: list[dict[str, Any]],
    *,
    round_trip: bool,
) -> list[float]:
    """Send `rate` commands per second; latency of each `new` until its first book event
    (or, for the baseline, until the bare message itself comes back from a queue)."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    queue = await channel.get_queue(topology.queue_name(ROUND_TRIP if round_trip else TAP))

    async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.perf_counter()
        for body in Envelope.decode_message(incoming):
            if round_trip:
                started = sent.pop(body.message_id, None)
                if started is not None:
                    latencies.append(now - started)
                continue
            for event in body.payload["events"]:
                if event["type"] in ("OrderAccepted", "OrderRejected"):
                    started = sent.pop(event["order_id"], None)
                    if started is not None:
                        latencies.append(now - started)

    await queue.purge()  # events of earlier phases must not count as this phase's latency
    tag = await queue.consume(on_message, no_ack=True)
    total = int(rate * seconds)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    begin = time.perf_counter()
    for i in range(0, min(total, len(payloads)), per_tick):
        target = begin + (i / rate)
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = payloads[i : i + per_tick]
        messages = []
        for payload in chunk:
            if round_trip:
                envelope = Envelope(str(uuid7()), "bench", "bench", "bench", 1, payload)
                messages.append(OutgoingMessage.from_envelope("bench.roundtrip", envelope))
                sent[envelope.message_id] = time.perf_counter()
            else:
                msg = message(payload)
                messages.append(msg)
                if payload["command"] == "new":
                    sent[payload["order_id"]] = time.perf_counter()
        await broker.publish(bundle(messages, 200))
    deadline = time.perf_counter() + 30
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await queue.cancel(tag)
    return latencies


async def main(args: argparse.Namespace) -> None:
    tag = f"{os.getpid()}"
    database = args.database
    database_url = f"{BASE_URL}/{database}"
    admin = await asyncpg.connect(asyncpg_dsn(BASE_URL + "/postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    await asyncio.to_thread(upgrade_all, database_url)
    prefix = f"bench{tag}"
    topology = Topology(prefix)
    broker = Broker(
        AMQP_URL,
        topology,
        connection_name="bench",
        prefetch=1000,
        queues=[*system_queues(SHARDS), TAP, ROUND_TRIP],
    )
    broker.start()
    await broker.wait_connected(20)
    db = await asyncpg.connect(asyncpg_dsn(database_url))
    service = Service(database_url, prefix, args.port)
    amqp = await aio_pika.connect(AMQP_URL)
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=5000)
    results: dict[str, Any] = {}
    try:
        codes = codes_on_shards("T")
        streams = [
            book_commands(c, args.ops // SHARDS, seed=20261122 + i) for i, c in enumerate(codes)
        ]
        payloads = interleave(*streams)
        results["in_process"] = in_process_rate([listing(c) for c in codes] + payloads)

        results["empty_start"] = await service.start()
        await publish(broker, [listing(c) for c in codes])
        started = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("durable throughput", total=len(payloads))
            await publish(broker, payloads)
            results["publish_rate"] = len(payloads) / (time.perf_counter() - started)
            while (done := await journal_count(db) - len(codes)) < len(payloads):
                progress.update(task, completed=done)
                await asyncio.sleep(0.05)
            while await unpublished(db):
                await asyncio.sleep(0.02)
        results["durable"] = len(payloads) / (time.perf_counter() - started)

        for rate in args.rates:
            lat_codes = codes_on_shards(f"L{rate}")
            await publish(broker, [listing(c) for c in lat_codes])
            lat_payloads = interleave(
                *[
                    book_commands(c, int(rate * args.seconds), seed=rate + i)
                    for i, c in enumerate(lat_codes)
                ]
            )
            console.print(f"offered load {rate}/s for {args.seconds}s")
            base = await offered_load(
                broker, channel, topology, rate, args.seconds, lat_payloads, round_trip=True
            )
            engine = await offered_load(
                broker, channel, topology, rate, args.seconds, lat_payloads, round_trip=False
            )
            results[f"latency_{rate}"] = (percentiles(base), percentiles(engine), len(engine))

        resting_code = codes_on_shards("R")[0]
        before = await journal_count(db)
        await publish(broker, [listing(resting_code)])
        resting = [
            {
                "command": "new",
                "instrument": resting_code,
                "order_id": f"r{i}",
                "member_id": f"m{i % 500}",
                "side": "BUY" if i % 2 else "SELL",
                "price_fen": (99_000 - i % 900) if i % 2 else (101_000 + i % 900),
                "quantity": 10,
                "tif": "GTC",
            }
            for i in range(args.resting)
        ]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"resting {args.resting} orders", total=len(resting))
            await publish(broker, resting)
            while (done := await journal_count(db) - before - 1) < len(resting):
                progress.update(task, completed=done)
                await asyncio.sleep(0.1)
        service.kill()
        results["restart"] = await service.start()
        results["resting"] = args.resting
    finally:
        service.stop()
        await db.close()
        await amqp.close()
        await broker.close()
        await delete_broker_namespace(prefix)
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"\n## Matching service (durable), {args.ops} commands, {SHARDS} shards\n")
    console.print(
        f"- in-process engine (same stream, no I/O): {results['in_process']:,.0f} commands/s"
    )
    console.print(f"- publisher alone: {results['publish_rate']:,.0f} commands/s")
    console.print(
        f"- durable end to end (RabbitMQ in → journal + outbox committed → events published): "
        f"{results['durable']:,.0f} commands/s = {results['durable'] / results['in_process']:.3f} × in-process"
    )
    for rate in args.rates:
        base, engine, n = results[f"latency_{rate}"]
        console.print(
            f"- latency at {rate}/s offered ({n} orders), ms, engine vs bare persistent queue round trip:"
        )
        for key in base:
            console.print(
                f"  - {key}: {engine[key]:.1f} vs {base[key]:.1f} ({engine[key] / max(base[key], 1e-9):.1f}×)"
            )
    console.print(
        f"- restart to ready after SIGKILL with {results['resting']:,} resting orders: "
        f"{results['restart']:.2f} s vs {results['empty_start']:.2f} s for an empty service "
        f"({results['restart'] / results['empty_start']:.1f}×)"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Durable matching service benchmark")
    parser.add_argument("--ops", type=int, default=30_000)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2500])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--resting", type=int, default=100_000)
    parser.add_argument("--port", type=int, default=18002)
    parser.add_argument(
        "--database",
        default="exchange_bench_matching",
        help="database to (re)create for the run (use your own when others bench too)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
