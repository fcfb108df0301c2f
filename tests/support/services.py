"""Starting a service as a real process (uvicorn) on a free port, for end-to-end tests."""

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.support import env
from tests.support.wait import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One service process; `kill()` is SIGKILL, as in a crash."""

    def __init__(self, service: str, port: int | None = None, **extra_env: str) -> None:
        self.service = service
        self.port = port or free_port()
        self.extra_env = {f"EXCHANGE_{service.upper()}_PORT": str(self.port), **extra_env}
        self.log_path = Path(tempfile.gettempdir()) / f"{service}-{env.RUN_TAG}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, **override_env: str) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"services.{self.service}.app:create_app",
                    "--factory",
                    "--port",
                    str(self.port),
                ],
                env=env.service_env(**self.extra_env, **override_env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 60, **override_env: str) -> None:
        self.spawn(**override_env)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 60) -> None:
        async with httpx.AsyncClient(timeout=2) as client:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.service} exited:\n{self.log_tail()}")
                try:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, timeout=timeout, message=f"{self.service} ready")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 30)

    async def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 30)
            except TimeoutError:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


async def metric_total(service: ServiceProcess, name: str) -> int:
    """The sum over labels of one of the service's counters on ``/metrics``."""
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{service.url}/metrics")).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith(name + "{")
    )
