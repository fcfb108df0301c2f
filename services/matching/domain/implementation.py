"""Which build of ``OrderBook`` the package exports: compiled (mypyc) or pure Python.

``book.py`` is the reference source. ``make install`` also compiles it with mypyc
(``services/matching/build_book.py``) into the extension module ``_compiled_book``
beside it, the engine the service runs. The compiled module embeds a hash of the
sources it was built from (``SOURCE_HASH``); it is used only while that hash equals
the hash of the sources on disk, so a stale build never shadows edited code.

``MATCHING_BOOK`` selects the build: ``auto`` (default: compiled if built and fresh,
else pure Python with a warning log), ``pure``, or ``compiled`` (fail if unavailable).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any, Final

#: The files the compiled module is built from (book.py inlines constants of the rest)
#: and the build script itself; their hash is embedded in the compiled module.
SOURCE_FILES: Final = (
    "domain/book.py",
    "domain/events.py",
    "domain/order.py",
    "domain/types.py",
    "build_book.py",
)
COMPILED_MODULE: Final = "services.matching.domain._compiled_book"
_MATCHING_DIR: Final = Path(__file__).resolve().parent.parent
_log = logging.getLogger(__name__)


class CompiledBookUnavailable(ImportError):
    """The compiled book is not built, cannot be imported, or is stale."""


def source_hash() -> str:
    """SHA-256 over the names and bytes of ``SOURCE_FILES``."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((_MATCHING_DIR / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def compiled_book() -> Any:
    """The compiled ``OrderBook`` class; ``CompiledBookUnavailable`` if absent or stale."""
    try:
        module = importlib.import_module(COMPILED_MODULE)
    except ImportError as exc:
        raise CompiledBookUnavailable(
            f"compiled order book not built ({exc}); run `make install`"
        ) from exc
    built = getattr(module, "SOURCE_HASH", None)
    if built != source_hash():
        raise CompiledBookUnavailable(
            f"compiled order book is stale (built from sources {str(built)[:12]}, "
            f"sources now {source_hash():.12}); run `make install`"
        )
    return module.OrderBook


def pure_book() -> Any:
    """The pure-Python ``OrderBook`` class (the reference)."""
    from services.matching.domain.book import OrderBook

    return OrderBook


def select(mode: str | None = None) -> tuple[Any, str]:
    """``(OrderBook class, "compiled" | "pure")`` for ``mode`` (default ``MATCHING_BOOK``)."""
    mode = mode if mode is not None else os.environ.get("MATCHING_BOOK", "auto")
    if mode == "pure":
        return pure_book(), "pure"
    if mode == "compiled":
        return compiled_book(), "compiled"
    if mode != "auto":
        raise ValueError(f"MATCHING_BOOK must be auto, pure or compiled, not {mode!r}")
    try:
        return compiled_book(), "compiled"
    except CompiledBookUnavailable as exc:
        _log.warning("%s; using the pure-Python order book", exc)
        return pure_book(), "pure"
