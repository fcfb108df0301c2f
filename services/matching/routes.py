"""Market data for the gateway: depth, recent trades and ticker of one book."""

import time
from typing import Any

from fastapi import APIRouter, Query, Request

from services.matching.shard import ShardWorker
from shared.contracts import shard_of
from shared.errors import ProblemError
from shared.money import format_fen

router = APIRouter(prefix="/internal/books", tags=["market data"])

#: A worker idle this long may be a standby: it reads the journal before answering.
STANDBY_AFTER_SECONDS = 1.0


async def _book_worker(request: Request, code: str) -> ShardWorker:
    workers: dict[int, ShardWorker] = request.app.state.shard_workers
    worker = workers.get(shard_of(code, request.app.state.shard_count))
    if worker is None:
        raise ProblemError(404, "UNKNOWN_INSTRUMENT", f"no book for {code!r} in this instance")
    if time.monotonic() - worker.last_active > STANDBY_AFTER_SECONDS:
        await worker.catch_up()
    if code not in worker.engine.books:
        raise ProblemError(404, "UNKNOWN_INSTRUMENT", f"no book for {code!r}")
    return worker


def _price(fen: int | None) -> str | None:
    return None if fen is None else format_fen(fen)


@router.get("/{code}/depth")
async def depth(
    request: Request, code: str, levels: int = Query(default=10, ge=1, le=1000)
) -> dict[str, Any]:
    worker = await _book_worker(request, code)
    book = worker.engine.books[code]
    bids, asks = book.depth(levels)
    return {
        "instrument": code,
        "sequence": book.sequence,
        "bids": [[format_fen(p), q] for p, q in bids],
        "asks": [[format_fen(p), q] for p, q in asks],
    }


@router.get("/{code}/trades")
async def trades(
    request: Request, code: str, limit: int = Query(default=50, ge=1, le=1000)
) -> dict[str, Any]:
    worker = await _book_worker(request, code)
    recent = list(worker.engine.stats[code].recent)[-limit:]
    return {
        "items": [
            {"price": format_fen(p), "quantity": q, "executed_at": at, "sequence": seq}
            for p, q, at, seq in reversed(recent)
        ]
    }


@router.get("/{code}/ticker")
async def ticker(request: Request, code: str) -> dict[str, Any]:
    worker = await _book_worker(request, code)
    book = worker.engine.books[code]
    stats = worker.engine.stats[code]
    return {
        "instrument": code,
        "business_date": book.business_date.isoformat(),
        "state": book.state,
        "sequence": book.sequence,
        "last": _price(stats.last_fen),
        "open": _price(stats.open_fen),
        "high": _price(stats.high_fen),
        "low": _price(stats.low_fen),
        "volume": stats.volume,
        "turnover": format_fen(stats.turnover_fen),
        "reference_price": format_fen(stats.reference_price_fen),
        "best_bid": _price(book.best_bid()),
        "best_ask": _price(book.best_ask()),
    }
