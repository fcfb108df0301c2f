"""End-to-end order benchmark: real gateway, custody, matching and clearing processes, real
PostgreSQL and RabbitMQ, orders signed like a partner's and counted when their order view
is final.

    .venv/bin/python -m bench.gateway.e2e [--seconds 8] [--concurrency 32] [--rates 100,1000]

"Order view final" means: the gateway's order view row has left ``pending_new`` for the
state the engine decided for the order's ``new`` command (``open``, ``partially_filled``,
``filled``; ``rejected`` if custody or the book refused it). The benchmark learns it the
moment the view updater's transaction commits, from the ``gateway_ws`` NOTIFY that the
updater sends in that transaction (the feed of the WebSocket ``orders`` channel), on a
LISTEN connection of its own.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams (one
request in flight per connection, HMAC-signed like exchange_cli/api_client.py): httpx
costs ~0.5 ms of CPU per request, which on this 2-core machine would be the bottleneck.
Its own ceiling is measured against ``/healthz`` in the same run, and so is the latency
of a bare HTTP round trip at the offered rate (the floor the order latencies are set
against).
"""

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aio_pika
import asyncpg
import httpx
import orjson

from exchange_cli.api_client import signed_headers
from shared.contracts import shard_of, system_queues
from shared.db import asyncpg_dsn
from shared.messaging.outbox import unpublished_count_sql
from shared.messaging.topology import Topology
from shared.migrations import ensure_database, upgrade_all
from tests.support.broker_admin import delete_broker_namespace
from tests.support.products import instrument_body

BASE_DB = os.environ.get(
    "EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"
)
AMQP = os.environ.get("EXCHANGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN = "bench-admin-" + secrets.token_hex(6)
SERVICES = ("custody", "matching", "clearing", "gateway")
SHARDS = 2
FINAL_WAIT = 300.0


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, env: dict[str, str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"services.{self.name}.app:create_app",
                    "--factory",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s: a benchmark must always end."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 20)
        except TimeoutError:
            print(f"  ({self.name} did not exit within 20 s of SIGTERM; killed)")
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


# --- a small HTTP/1.1 client --------------------------------------------------------------


class Conn:
    """One keep-alive connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        self.writer.close()


class Pool:
    """At most ``size`` connections; a request beyond them waits for one (at a fixed
    offered rate that wait is part of its latency, as with wrk2's fixed connections)."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self._idle: list[Conn] = []
        self._all: list[Conn] = []
        self._slots = asyncio.Semaphore(size)

    async def _get(self, fresh: bool = False) -> Conn:
        if self._idle and not fresh:
            return self._idle.pop()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=2**22)
        conn = Conn(reader, writer)
        self._all.append(conn)
        return conn

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Callable[[], dict[str, str]] | None = None,
    ) -> tuple[int, bytes]:
        """``headers`` is called once a connection is ours (a signature made while waiting
        in this queue could be stale by the time it is sent)."""
        async with self._slots:
            return await self._request(method, path, body, headers() if headers else None)

    async def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        for attempt in (0, 1):
            conn = await self._get(fresh=attempt > 0)
            try:
                result = await conn.request(method, path, body, headers or {})
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed an idle keep-alive connection: once more on a new one.
                conn.close()
                self._all.remove(conn)
                if attempt:
                    raise
                continue
            except BaseException:
                conn.close()
                self._all.remove(conn)
                raise
            self._idle.append(conn)
            return result
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all, self._idle = [], []


# --- measurement -------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS


def reaped_children_seconds(pid: int) -> float:
    """CPU time of a process's children that have exited (and been waited for) so far."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / TICKS


def parent_pid(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def broker_pid() -> int | None:
    """The local RabbitMQ node's process (its Erlang VM), if it runs on this machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


class CpuMeter:
    """CPU seconds spent per service process, by PostgreSQL and by the RabbitMQ node (which
    serves only this benchmark here): per order, a cost that does not depend on how busy
    the shared machine is (wall-clock throughput does).

    PostgreSQL's is the CPU of the backends serving this benchmark's database that are
    alive, plus that of every PostgreSQL process that has exited (the postmaster's reaped
    children). A connection closed and opened again during a phase (asyncpg's pool
    replaces one after 50,000 queries) is then counted whole; counting only the backends
    seen alive had lost the CPU such a backend spent in the phase before it closed."""

    def __init__(self, services: list["Service"], database: str, probe: asyncpg.Connection) -> None:
        self.services, self.database, self.probe = services, database, probe
        self.postmaster: int | None = None
        self.broker = broker_pid()

    async def snapshot(self) -> dict[str, float]:
        rows = await self.probe.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        )
        backends = [row["pid"] for row in rows]
        if self.postmaster is None and backends:
            self.postmaster = parent_pid(backends[0])
        taken = {s.name: cpu_seconds(s.proc.pid) for s in self.services if s.proc}
        taken["postgres"] = sum(cpu_seconds(pid) for pid in backends) + (
            reaped_children_seconds(self.postmaster) if self.postmaster else 0.0
        )
        if self.broker is not None:
            taken["rabbitmq"] = cpu_seconds(self.broker)
        taken["load generator"] = cpu_seconds(os.getpid())
        return taken

    @staticmethod
    def per_order(
        before: dict[str, float],
        after: dict[str, float],
        orders: int,
        machine_busy_seconds: float | None = None,
    ) -> str:
        """CPU per order of each process measured; with the whole machine's busy time, also
        what the rest of it spent (PostgreSQL's background processes, the kernel's threads,
        everything else running here), which the measured processes do not include."""
        n = max(orders, 1)
        spent = {name: after[name] - before.get(name, 0.0) for name in after}
        total = sum(seconds for name, seconds in spent.items() if name != "load generator")
        rest = ""
        if machine_busy_seconds is not None:
            measured = sum(spent.values())
            rest = f"; rest of the machine {(machine_busy_seconds - measured) * 1000 / n:.2f}"
        return (
            "CPU ms/order: "
            + ", ".join(f"{name} {seconds * 1000 / n:.2f}" for name, seconds in spent.items())
            + f"; exchange total {total * 1000 / n:.2f}"
            + f" (2 cores / that = {2 * n / max(total, 1e-9):,.0f} orders/s)"
            + rest
        )


class Ticks(NamedTuple):
    """The machine's CPU ticks from /proc/stat: every process, every core."""

    busy: int
    total: int
    #: ticks the hypervisor ran something else while this machine wanted its vCPUs
    steal: int


def cpu_ticks() -> Ticks:
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return Ticks(busy=sum(ticks) - idle, total=sum(ticks), steal=ticks[7])


def busy_share(before: Ticks, after: Ticks) -> float:
    return (after.busy - before.busy) / max(after.total - before.total, 1)


def steal_share(before: Ticks, after: Ticks) -> float:
    return (after.steal - before.steal) / max(after.total - before.total, 1)


def busy_seconds(before: Ticks, after: Ticks) -> float:
    """CPU seconds the machine's processes ran between two readings (steal left out)."""
    ran = (after.busy - before.busy) - (after.steal - before.steal)
    return ran / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


def describe(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    return (
        f"p50 {pct(samples, 0.5):.1f} / p99 {pct(samples, 0.99):.1f} / "
        f"p99.9 {pct(samples, 0.999):.1f} / max {max(samples) * 1000:.1f} ms"
    )


@dataclass
class Tracker:
    """Send and answer times per order (from here) and view-final times (from NOTIFY)."""

    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    final_wall: dict[str, float] = field(default_factory=dict)
    #: Per order, ms from the services' timestamps: →custody reserved, →book events, →view.
    hops: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        now = time.perf_counter()
        message = orjson.loads(payload)
        if message.get("k") != "order":
            return
        data = message["data"]
        if data["status"] == "pending_new":
            return
        order_id = data["order_id"]
        if order_id not in self.final:
            self.final[order_id] = now
            self.final_wall[order_id] = time.time()
            self.statuses[data["status"]] = self.statuses.get(data["status"], 0) + 1

    async def wait_final(self, ids: list[str], timeout: float = FINAL_WAIT) -> float:
        """The time the last of these orders became final (raises after the deadline)."""
        deadline = time.perf_counter() + timeout
        while True:
            missing = [i for i in ids if i not in self.final]
            if not missing:
                return max((self.final[i] for i in ids), default=time.perf_counter())
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(missing)} of {len(ids)} orders not final in {timeout} s")
            await asyncio.sleep(0.05)


class Client:
    """A partner placing orders (single or batch) through a Pool."""

    def __init__(
        self,
        pool: Pool,
        api_key: str,
        secret: str,
        members: list[str],
        codes: list[str],
        tracker: Tracker,
    ) -> None:
        self.pool, self.key, self.secret = pool, api_key, secret
        self.members, self.codes, self.tracker = members, codes, tracker
        self.rng = random.Random(7)
        self.errors = 0

    def order(self) -> dict[str, Any]:
        # Prices 99.95..100.05 on both sides: about half the orders trade on arrival.
        side = self.rng.choice(("buy", "sell"))
        return {
            "client_order_id": secrets.token_hex(10),
            "member_id": self.rng.choice(self.members),
            "instrument": self.rng.choice(self.codes),
            "side": side,
            "price": f"{100 + self.rng.randint(-5, 5) / 100:.2f}",
            "quantity": 1,
            "time_in_force": "GTC",
        }

    async def _post(self, path: str, body: Any) -> tuple[int, bytes, float, float]:
        raw = orjson.dumps(body)
        started = time.perf_counter()
        status, payload = await self.pool.request(
            "POST", path, raw, lambda: signed_headers(self.key, self.secret, "POST", path, raw)
        )
        return status, payload, started, time.perf_counter()

    async def single(self, scheduled: float | None = None) -> int:
        status, payload, started, done = await self._post("/v1/orders", self.order())
        if status != 202:
            self.errors += 1
            if self.errors < 5:
                print(f"  single order answered {status}: {payload[:300]!r}")
            return 0
        order_id = orjson.loads(payload)["order_id"]
        self.tracker.sent[order_id] = scheduled if scheduled is not None else started
        self.tracker.answered[order_id] = done
        return 1

    async def batch(self, size: int, scheduled: float | None = None) -> int:
        body = {"orders": [self.order() for _ in range(size)]}
        status, payload, started, done = await self._post("/v1/orders/batch", body)
        if status != 202:
            self.errors += 1
            if self.errors < 5:
                print(f"  batch answered {status}: {payload[:300]!r}")
            return 0
        count = 0
        for result in orjson.loads(payload)["results"]:
            if "order_id" in result and result.get("status") == "pending_new":
                self.tracker.sent[result["order_id"]] = (
                    scheduled if scheduled is not None else started
                )
                self.tracker.answered[result["order_id"]] = done
                count += 1
            else:
                self.errors += 1
        return count


async def closed_loop(
    seconds: float, concurrency: int, send: Callable[[], Awaitable[int]]
) -> tuple[int, float, float]:
    """(items, start, end of the last answer)."""
    start = time.perf_counter()
    deadline = start + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            n = await send()
            done += n

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, start, time.perf_counter()


async def open_loop(
    seconds: float, rate: float, send: Callable[[float], Coroutine[Any, Any, int]]
) -> tuple[int, float]:
    """Requests started at a fixed rate whatever the answers do; latency counts from the
    scheduled start (no coordinated omission). Returns (items, start)."""
    start = time.perf_counter()
    total = int(seconds * rate)
    tasks: list[asyncio.Task[int]] = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(scheduled)))
    results = await asyncio.gather(*tasks)
    return sum(results), start


async def quiesce(conn: asyncpg.Connection, prefix: str, timeout: float = FINAL_WAIT) -> float:
    """Wait until the whole exchange is idle (nothing unpublished in any outbox, nothing
    waiting in any queue, no message applied for a second): a phase's tail (trades being
    turned into obligations, clearing's copies) must not slow the next one. Returns the
    seconds waited."""
    topology = Topology(prefix)
    names = [topology.queue_name(q) for q in system_queues(SHARDS)]
    started = time.perf_counter()
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        last: tuple[int, int] | None = None
        while time.perf_counter() - started < timeout:
            unpublished = await conn.fetchval(
                " + ".join(f"({unpublished_count_sql(s)})" for s in SERVICES).join(("SELECT ", ""))
            )
            applied = await conn.fetchval(
                " + ".join(
                    f"(SELECT count(*) FROM {s}.inbox)" for s in SERVICES if s != "matching"
                ).join(("SELECT ", ""))
            )
            # A consumer's batch in progress shows as an open transaction (its inbox rows
            # are not visible until it commits).
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start < now() - interval '300 ms'"
            )
            ready = int(busy)
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                ready += queue.declaration_result.message_count or 0
            state = (int(unpublished) + ready, int(applied))
            if state[0] == 0 and state == last:
                return time.perf_counter() - started
            last = state
            await asyncio.sleep(1.0)
    finally:
        await connection.close()
    raise RuntimeError(f"the exchange did not become idle within {timeout} s")


async def stages(conn: asyncpg.Connection, tracker: Tracker, ids: list[str]) -> str:
    """Where an order's time went, from the services' own timestamps (one clock): the
    gateway's transaction (order row created_at) → custody's reservation (created_at) →
    the book's events (the view's updated_at is the events' occurred_at) → view final
    (the NOTIFY's arrival here)."""
    rows = await conn.fetch(
        """
        SELECT o.order_id, extract(epoch FROM o.created_at) AS accepted,
               extract(epoch FROM r.created_at) AS reserved,
               extract(epoch FROM o.updated_at) AS matched
        FROM gateway.orders o LEFT JOIN custody.reservations r USING (order_id)
        WHERE o.order_id = ANY($1::text[])
        """,
        ids,
    )
    to_custody, to_book, to_view = [], [], []
    for row in rows:
        final = tracker.final_wall.get(row["order_id"])
        if row["reserved"] is None or final is None:
            continue
        to_custody.append(float(row["reserved"] - row["accepted"]))
        # A resting order filled later has the later fill's time: its first events' time
        # is gone, so it counts in neither of the last two stages.
        if float(row["matched"]) <= final:
            to_book.append(float(row["matched"] - row["reserved"]))
            to_view.append(final - float(row["matched"]))
            tracker.hops[row["order_id"]] = (to_custody[-1], to_book[-1], to_view[-1])

    def p(samples: list[float]) -> str:
        return f"{pct(samples, 0.5):.0f}/{pct(samples, 0.99):.0f}"

    return (
        f"stages p50/p99 ms: gateway commit→custody reserved {p(to_custody)}, "
        f"→book events {p(to_book)}, →view final {p(to_view)}"
    )


def slow_seconds(tracker: Tracker, ids: list[str], limit: float = 0.1, top: int = 8) -> str:
    """The seconds of the phase (by send time, wall clock) whose slowest order took longer
    than ``limit`` to become final, worst first: when the tail happens, to set beside the
    services' logs."""
    by_second: dict[int, list[tuple[float, float, tuple[float, float, float] | None]]] = {}
    for i in ids:
        if i not in tracker.final:
            continue
        e2e = tracker.final[i] - tracker.sent[i]
        sent_wall = tracker.final_wall[i] - e2e
        by_second.setdefault(int(sent_wall), []).append(
            (e2e, tracker.answered[i] - tracker.sent[i], tracker.hops.get(i))
        )
    worst_of = {second: max(e2e for e2e, _, _ in v) for second, v in by_second.items()}
    slow = sorted(
        ((worst, second, by_second[second]) for second, worst in worst_of.items() if worst > limit),
        reverse=True,
    )
    if not slow:
        return f"no second with an order slower than {limit * 1000:.0f} ms"
    parts = []
    for worst, second, samples in slow[:top]:
        stamp = time.strftime("%H:%M:%S", time.gmtime(second))
        over = sum(1 for e2e, _, _ in samples if e2e > limit)
        ack = max(a for _, a, _ in samples)
        hops = [h for _, _, h in samples if h is not None]
        stalls = "/".join(f"{max((h[k] for h in hops), default=0) * 1000:.0f}" for k in range(3))
        parts.append(
            f"{stamp} ({over} over, max {worst * 1000:.0f} ms, 202 max {ack * 1000:.0f}, "
            f"hops max {stalls})"
        )
    return f"{len(slow)} seconds with an order over {limit * 1000:.0f} ms: " + "; ".join(parts)


# --- set-up --------------------------------------------------------------------------------


def codes_on_shards(tag: str) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        code = f"G{tag.upper()}{n:03d}"[:16]
        found.setdefault(shard_of(code, SHARDS), code)
        n += 1
    return [found[s] for s in range(SHARDS)]


async def seed(gateway: str, members_count: int) -> tuple[str, str, list[str], list[str]]:
    """A partner, two products (one per shard) and members holding cash and units of both."""
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}

        async def staff(path: str, body: Any) -> Any:
            response = await http.post(path, json=body, headers=admin)
            assert response.status_code in (200, 201), f"{path}: {response.text}"
            return response.json()

        partner = await staff(
            "/v1/admin/partners",
            {"name": "bench", "rate_limit_per_second": 1_000_000, "rate_limit_burst": 1_000_000},
        )
        key, secret = partner["api_key"], partner["api_secret"]

        async def signed(path: str, body: Any) -> Any:
            raw = orjson.dumps(body)
            response = await http.post(
                path, content=raw, headers=signed_headers(key, secret, "POST", path, raw)
            )
            assert response.status_code in (200, 201, 202), f"{path}: {response.text}"
            return response.json()

        codes = codes_on_shards(secrets.token_hex(3))
        for code in codes:
            await staff(
                "/v1/admin/instruments",
                instrument_body(code, issue_size=100_000_000, max_holders=100_000, risk_level="R2"),
            )
        members = []
        for i in range(members_count):
            made = await signed(
                "/v1/members",
                {
                    "external_ref": f"bench-{i}-{secrets.token_hex(3)}",
                    "name": "Bench investor",
                    "kind": "individual",
                    "qualified": True,
                    "risk_tolerance": "C5",
                },
            )
            members.append(made["member_id"])
            await staff(
                "/v1/admin/deposits",
                {
                    "member_id": made["member_id"],
                    "amount": "100000000.00",
                    "bank_reference": f"BK{secrets.token_hex(6)}",
                },
            )
        for code in codes:
            await staff(
                f"/v1/admin/instruments/{code}/allocations",
                {"allocations": [{"member_id": m, "quantity": 1_000_000} for m in members]},
            )
        return key, secret, members, codes


# --- the run -------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    tag = f"gateway_perf_{secrets.token_hex(3)}"
    database = f"{BASE_DB}/exchange_bench_{tag}"
    prefix = f"bench.{tag}"
    await ensure_database(database)
    await asyncio.to_thread(upgrade_all, database)
    ports = {name: free_port() for name in SERVICES}
    env = dict(os.environ)
    env.pop("EXCHANGE_CRASH_AT", None)
    service_database = database
    if args.pg_socket:
        # The services (not the benchmark's own connections) reach PostgreSQL by its Unix
        # socket instead of TCP on loopback: how a co-located database would be configured.
        service_database = f"{database}?host={args.pg_socket}"
    env.update(
        EXCHANGE_DATABASE_URL=service_database,
        EXCHANGE_AMQP_URL=AMQP,
        EXCHANGE_BROKER_PREFIX=prefix,
        EXCHANGE_ADMIN_TOKEN=ADMIN,
        EXCHANGE_LOG_LEVEL="WARNING",
        EXCHANGE_LOG_FORMAT="console",
        EXCHANGE_MATCHING_SHARDS=str(SHARDS),
        **{f"EXCHANGE_{n.upper()}_PORT": str(p) for n, p in ports.items()},
    )
    env.update(dict(kv.split("=", 1) for kv in args.env))
    logs = Path(tempfile.gettempdir())
    services = [Service(n, ports[n], logs / f"bench-{tag}-{n}.log") for n in SERVICES]
    listener: asyncpg.Connection | None = None
    pool: Pool | None = None
    tracker = Tracker()
    print(f"## gateway end to end ({tag}; logs {logs}/bench-{tag}-*.log)\n")
    try:
        for service in services:
            service.spawn(env)
        await asyncio.gather(*(s.wait_ready() for s in services))
        gateway = services[-1]
        key, secret, members, codes = await seed(gateway.url, args.members)
        listener = await asyncpg.connect(asyncpg_dsn(database))
        await listener.add_listener("gateway_ws", tracker.on_notify)
        pool = Pool(gateway.port, args.connections)
        client = Client(pool, key, secret, members, codes, tracker)
        pids = " ".join(f"{s.name}={s.proc.pid}" for s in services if s.proc)
        print(f"services: {pids}; products {codes}; {len(members)} members\n")

        # Warm up: the caches, the connection pools, the JIT-less first calls; then a
        # history, analysed, so that the planner sees tables of a venue that has been
        # trading (autovacuum would analyse them within a minute; a phase lasts seconds).
        n, _, _ = await closed_loop(2, 8, client.single)
        n, _, _ = await closed_loop(args.warmup_seconds, 4, lambda: client.batch(100))
        await tracker.wait_final(list(tracker.sent))
        await listener.execute("ANALYZE")
        print(f"- warm-up: {len(tracker.sent)} orders, then ANALYZE")
        rows: list[tuple[str, str]] = []

        async def healthz(_: float | None = None) -> int:
            await pool.request("GET", "/healthz")
            return 1

        # The load generator's own ceiling: a bare HTTP round trip to the gateway.
        n, start, end = await closed_loop(3, args.concurrency, healthz)
        ceiling = n / (end - start)
        rows.append(("generator ceiling (GET /healthz, closed loop)", f"{ceiling:,.0f} req/s"))
        print(f"- generator ceiling: GET /healthz {ceiling:,.0f} req/s, {args.concurrency} conns")

        meter = CpuMeter(services, f"exchange_bench_{tag}", listener)

        async def measure(label: str, send: Callable[[], Awaitable[int]], conc: int) -> None:
            await quiesce(listener, prefix)
            before = set(tracker.sent)
            cpu_before = await meter.snapshot()
            n, start, end = await closed_loop(args.seconds, conc, send)
            ids = [i for i in tracker.sent if i not in before]
            last = await tracker.wait_final(ids)
            await asyncio.sleep(0.5)  # the relays' and consumers' tails of this phase
            cpu = CpuMeter.per_order(cpu_before, await meter.snapshot(), len(ids))
            accepted = n / (end - start)
            final = len(ids) / (last - start)
            e2e = [tracker.final[i] - tracker.sent[i] for i in ids]
            rows.append((label, f"202: {accepted:,.0f}/s; final: **{final:,.0f} orders/s**"))
            print(
                f"- {label}: {len(ids)} orders; 202 at {accepted:,.0f}/s; view final at "
                f"{final:,.0f} orders/s (last final {last - end:.2f} s after the last 202); "
                f"send→final {describe(e2e)}\n    {cpu}\n    {await stages(listener, tracker, ids)}"
            )

        if "single" in args.phases:
            await measure(
                f"single orders, {args.concurrency} concurrent", client.single, args.concurrency
            )
        if "batch" in args.phases:
            await measure(
                f"batches of {args.batch}, {args.batch_concurrency} concurrent",
                lambda: client.batch(args.batch),
                args.batch_concurrency,
            )
        if "latency" not in args.phases:
            return

        # Latency at fixed offered rates, with a bare round trip at the same rate.
        for rate in args.rates:
            await quiesce(listener, prefix)
            base: list[float] = []

            async def timed_healthz(scheduled: float, base: list[float] = base) -> int:
                await pool.request("GET", "/healthz")
                base.append(time.perf_counter() - scheduled)
                return 1

            await open_loop(args.latency_seconds, rate, timed_healthz)
            print(f"- baseline GET /healthz offered at {rate:g}/s: {describe(base)}")
            if args.latency_single:
                before = set(tracker.sent)
                errors = client.errors
                await open_loop(args.latency_seconds, rate, client.single)
                ids = [i for i in tracker.sent if i not in before]
                await tracker.wait_final(ids)
                e2e = [tracker.final[i] - tracker.sent[i] for i in ids]
                acks = [tracker.answered[i] - tracker.sent[i] for i in ids]
                print(
                    f"- single orders offered at {rate:g}/s ({len(ids)} accepted, "
                    f"{client.errors - errors} refused):"
                )
                print(f"    202:   {describe(acks)}")
                print(f"    final: {describe(e2e)}")
                print(f"    {await stages(listener, tracker, ids)}")
                print(
                    "    p99 final / p99 bare round trip: "
                    f"{pct(e2e, 0.99) / max(pct(base, 0.99), 1e-9):.1f}×"
                )
            if args.batch_rate_size:
                await quiesce(listener, prefix)
                size = args.batch_rate_size
                before = set(tracker.sent)
                cpu_before, ticks_before = await meter.snapshot(), cpu_ticks()
                await open_loop(
                    args.latency_seconds,
                    rate / size,
                    lambda s, size=size: client.batch(size, s),  # type: ignore[misc]
                )
                ids = [i for i in tracker.sent if i not in before]
                await tracker.wait_final(ids)
                ticks_after = cpu_ticks()
                busy = busy_share(ticks_before, ticks_after)
                cpu = CpuMeter.per_order(
                    cpu_before,
                    await meter.snapshot(),
                    len(ids),
                    busy_seconds(ticks_before, ticks_after),
                )
                e2e = [tracker.final[i] - tracker.sent[i] for i in ids]
                acks = [tracker.answered[i] - tracker.sent[i] for i in ids]
                print(f"- batches of {size} offered at {rate:g} orders/s ({len(ids)} orders):")
                print(f"    202:   {describe(acks)}")
                print(f"    final: {describe(e2e)}")
                print(f"    {await stages(listener, tracker, ids)}")
                print(f"    {slow_seconds(tracker, ids)}")
                print(
                    f"    {cpu}; machine busy {busy:.0%} (all processes, both cores; "
                    f"of it stolen by the hypervisor {steal_share(ticks_before, ticks_after):.0%})"
                )
        print(f"- final states: {tracker.statuses}; errors: {client.errors}")
    finally:
        if listener is not None:
            await listener.close()
        if pool is not None:
            pool.close()
        started = time.perf_counter()
        await asyncio.gather(*(s.stop() for s in reversed(services)))
        print(f"- services stopped in {time.perf_counter() - started:.1f} s")
        if not args.keep:
            admin_conn = await asyncpg.connect(asyncpg_dsn(BASE_DB + "/postgres"))
            await admin_conn.execute(f'DROP DATABASE IF EXISTS "exchange_bench_{tag}" WITH (FORCE)')
            await admin_conn.close()
            await delete_broker_namespace(prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="per throughput phase")
    parser.add_argument("--latency-seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--connections", type=int, default=64, help="the load generator's connections"
    )
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1000.0],
        help="offered rates (orders/s) of the latency phases",
    )
    parser.add_argument(
        "--batch-rate-size", type=int, default=20, help="also offer the rate as batches (0: no)"
    )
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument(
        "--latency-single",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer single orders at each rate too",
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=4, help="of batches, before ANALYZE"
    )
    parser.add_argument(
        "--phases",
        type=lambda v: set(v.split(",")),
        default={"single", "batch", "latency"},
        help="comma-separated: single,batch,latency",
    )
    parser.add_argument(
        "--pg-socket",
        default="",
        help="the services connect to PostgreSQL through the Unix socket in this directory",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and queues")
    parser.add_argument(
        "--env", action="append", default=[], help="extra KEY=VALUE for every service"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
