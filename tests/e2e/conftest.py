"""End-to-end suites run every service for real; each module gets a database of its own,
so the business dates and balances other suites leave behind cannot reach it."""

from collections.abc import Iterator

import pytest

from tests.support.databases import own_database


@pytest.fixture(scope="module")
def e2e_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with own_database(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]) as url:
        yield url
