"""The compiled build of the book is the one exported, and a stale one is never used."""

from __future__ import annotations

import logging
import sys

import pytest

from services.matching.domain import implementation
from services.matching.domain.implementation import (
    CompiledBookUnavailable,
    compiled_book,
    pure_book,
    select,
)


def test_make_install_built_a_fresh_compiled_book_and_auto_selects_it() -> None:
    compiled = compiled_book()
    module_file = sys.modules[compiled.__module__].__file__
    assert module_file is not None
    assert module_file.endswith(".so")
    assert compiled is not pure_book()
    assert select("auto") == (compiled, "compiled")
    assert select("pure") == (pure_book(), "pure")


def test_a_stale_compiled_book_falls_back_to_pure_python_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(implementation, "source_hash", lambda: "0" * 64)
    with pytest.raises(CompiledBookUnavailable, match="stale"):
        compiled_book()
    with pytest.raises(CompiledBookUnavailable, match="stale"):
        select("compiled")
    with caplog.at_level(logging.WARNING, logger=implementation.__name__):
        assert select("auto") == (pure_book(), "pure")
    assert "stale" in caplog.text


def test_unknown_build_name_is_refused() -> None:
    with pytest.raises(ValueError, match="MATCHING_BOOK"):
        select("fast")
