"""Where the tests find PostgreSQL and RabbitMQ, and the names that keep one run apart."""

import os
import secrets

BASE_DATABASE_URL = os.environ.get(
    "EXCHANGE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"
)
AMQP_URL = os.environ.get("EXCHANGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RUN_TAG = f"{os.getpid()}_{secrets.token_hex(3)}"
DATABASE_URL = f"{BASE_DATABASE_URL}/exchange_test_{RUN_TAG}"
BROKER_PREFIX = f"test{RUN_TAG}"


def service_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that must use this run's database and broker."""
    env = dict(os.environ)
    env.update(
        EXCHANGE_DATABASE_URL=DATABASE_URL,
        EXCHANGE_AMQP_URL=AMQP_URL,
        EXCHANGE_BROKER_PREFIX=BROKER_PREFIX,
        EXCHANGE_LOG_FORMAT="console",
    )
    env.pop("EXCHANGE_CRASH_AT", None)
    env.update(extra)
    return env
