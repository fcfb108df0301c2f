"""Client CPU per statement: SQLAlchemy's execution path against the driver's.

    .venv/bin/python -m bench.sql.overhead [--statements 3000]

Runs the same parameterised statement (an int and a 40-element text array, like the
consumers' batch statements) in one transaction: through ``AsyncSession.execute`` and
through ``shared.sql.Statement`` (the session's asyncpg connection); and a transaction of
one statement, begun and committed through the session, or on a driver transaction
(``shared.driver``, what the hot consumers use). CPU is this process's (user +
system, from getrusage), so the figure does not depend on how busy the machine is; both
over TCP on loopback and, when the directory exists, PostgreSQL's Unix socket.
"""

import argparse
import asyncio
import os
import resource

from sqlalchemy import text

from shared.db import asyncpg_dsn, make_engine, make_session_factory
from shared.driver import DriverPool
from shared.sql import Statement

BASE = os.environ.get("EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
SOCKET_DIR = "/var/run/postgresql"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, n: int) -> dict[str, float]:
    engine = make_engine(url, pool_size=2)
    factory = make_session_factory(engine)
    pool = DriverPool(asyncpg_dsn(url), max_connections=2, application_name="bench-sql")
    orm = text("SELECT CAST(:i AS int), CAST(:a AS text[])")
    raw = Statement("SELECT CAST(:i AS int), CAST(:a AS text[])")
    array = [f"o_{i:022d}" for i in range(40)]
    out: dict[str, float] = {}
    try:
        async with factory() as session, session.begin():
            for i in range(50):  # prepare and warm both paths
                await session.execute(orm, {"i": i, "a": array})
                await raw.fetch(session, i=i, a=array)
            start = cpu_seconds()
            for i in range(n):
                await session.execute(orm, {"i": i, "a": array})
            out["AsyncSession.execute"] = (cpu_seconds() - start) / n
            start = cpu_seconds()
            for i in range(n):
                await raw.fetch(session, i=i, a=array)
            out["shared.sql.Statement"] = (cpu_seconds() - start) / n
        start = cpu_seconds()
        for i in range(n // 5):
            async with factory() as session, session.begin():
                await raw.fetch(session, i=i, a=array)
        out["transaction of one Statement"] = (cpu_seconds() - start) / (n // 5)
        for i in range(50):
            async with pool.transaction() as tx:
                await raw.fetch(tx, i=i, a=array)
        start = cpu_seconds()
        for i in range(n // 5):
            async with pool.transaction() as tx:
                await raw.fetch(tx, i=i, a=array)
        out["driver transaction of one Statement"] = (cpu_seconds() - start) / (n // 5)
    finally:
        await pool.close()
        await engine.dispose()
    return out


async def main(n: int, socket: bool) -> None:
    targets = [("TCP 127.0.0.1", f"{BASE}/postgres")]
    if socket:
        targets.append(("Unix socket", f"{BASE.rsplit('@', 1)[0]}@/postgres?host={SOCKET_DIR}"))
    print(f"client CPU per statement, µs ({n} statements each)\n")
    print(f"| path | {' | '.join(name for name, _ in targets)} |")
    print(f"|---|{'---|' * len(targets)}")
    results = [await measure(url, n) for _, url in targets]
    for path in results[0]:
        cells = " | ".join(f"{r[path] * 1e6:.0f}" for r in results)
        print(f"| {path} | {cells} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=3000)
    asyncio.run(main(parser.parse_args().statements, os.path.isdir(SOCKET_DIR)))
