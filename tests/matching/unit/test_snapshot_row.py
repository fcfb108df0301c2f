"""A shard snapshot as it is stored (``store.snapshot_row``)."""

import gc

import orjson
from golden_stream import golden_rows

from services.matching import store
from services.matching.engine import ShardEngine


def engine_with_orders() -> ShardEngine:
    """A shard part-way through the golden stream: several books with resting orders."""
    engine = ShardEngine(0)
    for row in golden_rows()[:1500]:
        engine.apply(row["seq"], row["command"], row["executed_at"])
    assert any(len(book) for book in engine.books.values())
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
