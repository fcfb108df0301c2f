"""A shard snapshot as it is stored (``store.snapshot_row``)."""

import gc

import orjson

from services.matching import store
from services.matching.engine import ShardEngine

DATE = "2026-05-04"


def engine_with_orders() -> ShardEngine:
    engine = ShardEngine(0)
    commands = [
        {
            "command": "list",
            "instrument": "P1",
            "tick_fen": 1,
            "lot": 1,
            "min_qty": 1,
            "band_low_fen": 9000,
            "band_high_fen": 11000,
            "reference_price_fen": 10000,
            "business_date": DATE,
            "state": "trading",
        },
        *(
            {
                "command": "new",
                "instrument": "P1",
                "order_id": f"o{n}",
                "member_id": f"m{n % 3}",
                "side": "BUY" if n % 2 else "SELL",
                "price_fen": 9900 - n if n % 2 else 10100 + n,
                "quantity": 5,
                "tif": "GTC",
            }
            for n in range(40)
        ),
    ]
    for seq, command in enumerate(commands, start=1):
        engine.apply(seq, command, f"{DATE}T01:00:00.000000Z")
    return engine


def test_the_row_restores_to_the_same_books_and_hash() -> None:
    engine = engine_with_orders()
    row = store.snapshot_row(engine)
    assert (row.shard, row.head) == (0, engine.head)
    assert row.books_hash == engine.books_hash()
    restored = ShardEngine.restore(orjson.loads(row.state))
    assert restored.books_hash() == row.books_hash
    assert restored.snapshot() == engine.snapshot()


def test_the_collector_is_left_as_it_was() -> None:
    engine = engine_with_orders()
    assert gc.isenabled()
    store.snapshot_row(engine)
    assert gc.isenabled()
    gc.disable()
    try:
        store.snapshot_row(engine)
        assert not gc.isenabled()
    finally:
        gc.enable()
