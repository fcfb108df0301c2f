"""`make run` brings every service to ready, stops them all on Ctrl-C, and starts again."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from exchange_cli.api_client import PartnerClient
from shared.migrations import SERVICES
from tests.support import env
from tests.support.databases import drop_database

ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"make run exited early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in time:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_make_run_starts_all_services_and_stops_them_on_ctrl_c(broker_namespace: str) -> None:
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    demo_state = Path(tempfile.gettempdir()) / f"demo-{env.RUN_TAG}.json"
    # A database of its own, created by `make run` itself as on a fresh machine.
    database_url = f"{env.BASE_DATABASE_URL}/exchange_test_{env.RUN_TAG}_run"
    run_env = env.service_env(
        EXCHANGE_DATABASE_URL=database_url,
        EXCHANGE_DEMO_STATE=str(demo_state),
        # A namespace of its own: messages other tests left behind must not reach this system.
        EXCHANGE_BROKER_PREFIX=f"{env.BROKER_PREFIX}.run",
        **{f"EXCHANGE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    try:
        for attempt in (1, 2):  # the second start reuses the same database
            log = Path(tempfile.gettempdir()) / f"make-run-{env.RUN_TAG}-{attempt}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    ["make", "--no-print-directory", "run"],
                    cwd=ROOT,
                    env=run_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_for_line(log, "exchange is ready", proc, timeout=120)
                seeded = "demo market seeded" if attempt == 1 else "demo market already seeded"
                assert seeded in log.read_text(), log.read_text()[-3000:]
                state = json.loads(demo_state.read_text())
                partner = PartnerClient(
                    f"http://127.0.0.1:{ports['gateway']}", state["api_key"], state["api_secret"]
                )
                listed = partner.call("GET", "/v1/instruments")
                assert {"ZJ2026A01", "ZJ2026B02"} <= {i["code"] for i in listed["items"]}
                assert len(listed["items"]) == 2, "a restart must not list the demo products again"
                partner.close()
                for name, port in ports.items():
                    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                    assert response.status_code == 200, (name, response.text)
                    assert response.json()["service"] == name
                    assert f"http://127.0.0.1:{port}" in log.read_text()
            finally:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
                proc.wait(timeout=30)
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]
            for port in ports.values():
                assert not port_open(port), f"port {port} still open after Ctrl-C"
    finally:
        asyncio.run(drop_database(database_url))
