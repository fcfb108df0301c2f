"""The container files describe the same stack as `make run` (no Docker engine runs here)."""

from pathlib import Path

import yaml

from shared.migrations import SERVICES

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_parses_and_runs_every_service_with_its_dependencies() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "migrate", *SERVICES} <= set(services)
    ports = {"gateway": 8000, "custody": 8001, "matching": 8002, "clearing": 8003}
    for name in SERVICES:
        service = services[name]
        command = service["command"]
        assert f"services.{name}.app:create_app" in command
        assert command[command.index("--port") + 1] == str(ports[name])
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        environment = service["environment"]
        assert environment["EXCHANGE_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in environment["EXCHANGE_DATABASE_URL"]
        assert "@rabbitmq:5672" in environment["EXCHANGE_AMQP_URL"]
        for other in SERVICES:
            assert environment[f"EXCHANGE_{other.upper()}_URL"] == f"http://{other}:{ports[other]}"
    assert services["migrate"]["command"] == ["exchange", "db", "migrate"]
    assert services["gateway"]["ports"] == ["8000:8000"]


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in ("shared", "services", "exchange_cli", "banksim"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
