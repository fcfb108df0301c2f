"""Making sure the local PostgreSQL and RabbitMQ are up, starting them when they are installed."""

import glob
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import make_url


@dataclass(frozen=True)
class Dependency:
    name: str
    host: str
    port: int
    start_commands: tuple[tuple[str, ...], ...]
    hint: str


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _postgres_start_commands() -> tuple[tuple[str, ...], ...]:
    if not shutil.which("pg_ctlcluster"):
        return ()
    versions = sorted(p.rsplit("/", 1)[1] for p in glob.glob("/etc/postgresql/*"))
    return tuple(
        ("pg_ctlcluster", "--skip-systemctl-redirect", v, "main", "start") for v in versions[-1:]
    )


def _rabbitmq_start_commands() -> tuple[tuple[str, ...], ...]:
    return (("rabbitmq-server", "-detached"),) if shutil.which("rabbitmq-server") else ()


def dependencies(database_url: str, amqp_url: str) -> list[Dependency]:
    db = make_url(database_url)
    amqp = urlsplit(amqp_url)
    return [
        Dependency(
            "PostgreSQL",
            db.host or "127.0.0.1",
            db.port or 5432,
            _postgres_start_commands(),
            "install PostgreSQL 15+ and start it, or set EXCHANGE_DATABASE_URL",
        ),
        Dependency(
            "RabbitMQ",
            amqp.hostname or "127.0.0.1",
            amqp.port or 5672,
            _rabbitmq_start_commands(),
            "install RabbitMQ 3.10+ and start it, or set EXCHANGE_AMQP_URL",
        ),
    ]


def ensure(
    deps: list[Dependency], *, wait_seconds: float = 90.0, log: Callable[[str], object] = print
) -> list[str]:
    """Start what is down and installed locally; return the problems that remain."""
    problems = []
    for dep in deps:
        if reachable(dep.host, dep.port):
            continue
        local = dep.host in ("127.0.0.1", "localhost", "::1")
        if not (local and dep.start_commands):
            problems.append(f"{dep.name} is not reachable at {dep.host}:{dep.port}: {dep.hint}")
            continue
        log(f"{dep.name} is down; starting the local one")
        for command in dep.start_commands:
            subprocess.run(
                command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + wait_seconds
        while not reachable(dep.host, dep.port):
            if time.monotonic() > deadline:
                problems.append(f"{dep.name} did not come up at {dep.host}:{dep.port}: {dep.hint}")
                break
            time.sleep(0.5)
    return problems
