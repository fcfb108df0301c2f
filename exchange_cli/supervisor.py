"""`exchange run`: the four services under one supervisor, in the foreground."""

import os
import sys
import threading
import time
from collections.abc import Callable

import httpx
from honcho.manager import Manager
from honcho.printer import Printer
from rich.console import Console
from rich.table import Table

from shared.config import CommonSettings
from shared.migrations import SERVICES


def service_command(service: str, settings: CommonSettings) -> str:
    return (
        f"{sys.executable} -m uvicorn services.{service}.app:create_app --factory "
        f"--host {settings.host} --port {settings.port_of(service)} --no-access-log"
    )


def wait_ready(settings: CommonSettings, deadline_seconds: float, stop: threading.Event) -> bool:
    pending = set(SERVICES)
    deadline = time.monotonic() + deadline_seconds
    with httpx.Client(timeout=2.0) as client:
        while pending and not stop.is_set():
            for service in sorted(pending):
                try:
                    if client.get(f"{settings.url_of(service)}/readyz").status_code == 200:
                        pending.discard(service)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                return False
            stop.wait(0.25)
    return not pending


def print_urls(console: Console, settings: CommonSettings) -> None:
    table = Table(title="exchange is ready", show_header=True)
    table.add_column("service")
    table.add_column("url")
    for service in SERVICES:
        table.add_row(service, settings.url_of(service))
    table.add_row("API docs", f"{settings.url_of('gateway')}/docs")
    console.print(table)
    console.print("Press Ctrl-C to stop every service.")


def run_services(
    settings: CommonSettings,
    *,
    ready_timeout: float = 90.0,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Start every service, report when all are ready, and block until stopped."""
    console = Console(stderr=False, highlight=False)
    env = dict(os.environ)
    env.setdefault("EXCHANGE_LOG_FORMAT", "console")
    env["PYTHONUNBUFFERED"] = "1"
    manager = Manager(Printer(sys.stdout))
    for service in SERVICES:
        manager.add_process(service, service_command(service, settings), env=env)
    stop = threading.Event()

    def announce() -> None:
        if not wait_ready(settings, ready_timeout, stop):
            if not stop.is_set():
                console.print(f"[red]services not ready after {ready_timeout:.0f}s; stopping[/red]")
                manager.terminate()
            return
        if on_ready is not None:
            on_ready()
        print_urls(console, settings)

    watcher = threading.Thread(target=announce, name="ready-watcher", daemon=True)
    watcher.start()
    try:
        manager.loop()
    finally:
        stop.set()
    return int(manager.returncode or 0)
