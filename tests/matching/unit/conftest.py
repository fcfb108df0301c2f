"""Run every book test twice: against the pure-Python book and the compiled build.

The module-scoped, parametrised autouse fixture ``book_build`` points every name the
tests (and the code under them) use for ``OrderBook`` at one build for the duration
of a test module: the test module's own import, ``services.matching.domain``, the
shard engine's and ``TypedBook``'s. Test ids end in ``[pure]`` or ``[compiled]``. The
compiled build must be present and fresh (``make install`` builds it): a missing or
stale build fails the ``[compiled]`` tests instead of testing the pure book twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typed_book

import services.matching.domain as domain
import services.matching.engine as engine
from services.matching.domain.implementation import compiled_book, pure_book


@pytest.fixture(scope="module", params=["pure", "compiled"], autouse=True)
def book_build(request: pytest.FixtureRequest) -> Iterator[Any]:
    cls = pure_book() if request.param == "pure" else compiled_book()
    with pytest.MonkeyPatch.context() as patch:
        for module in (domain, engine, typed_book, request.module):
            if hasattr(module, "OrderBook"):
                patch.setattr(module, "OrderBook", cls)
        yield cls
