"""The service's published book events are pinned byte for byte by a golden stream.

``tests/matching/golden/shard_stream.jsonl.gz`` was written by
``tests/matching/golden/make_golden.py`` running on the code of commit e5fe868, before the
book's in-process events changed from NamedTuples to plain tuples (see that script's
docstring). It holds 4,000 seeded commands of every kind (valid and invalid submits of
every time in force, self-trade prevention, cancels, amends, halts, bands, day rolls, a
delisting, malformed commands) on two products, the exact orjson bytes of the payloads
each command produced, ``books_hash()`` every 250 commands and two shard snapshots.
The current engine must publish exactly those bytes, reach the same state hashes and
snapshots, and continue identically from the old code's mid-stream snapshot.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from golden_stream import golden_rows

from services.matching.engine import ShardEngine
from services.matching.shard import output_payload


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return golden_rows()


def replay(engine: ShardEngine, rows: list[dict[str, Any]]) -> int:
    """Apply ``rows`` and compare every output with the golden one; returns hashes checked."""
    hashes = 0
    for row in rows:
        outputs = engine.apply(row["seq"], row["command"], row["executed_at"])
        wire = orjson.dumps([output_payload(o) for o in outputs]).decode()
        assert wire == row["wire"], f"command {row['seq']} {row['command']}"
        if "hash" in row:
            assert engine.books_hash() == row["hash"], f"state hash after {row['seq']}"
            hashes += 1
        if "snapshot" in row:
            snapshot = engine.snapshot()
            assert orjson.dumps(snapshot).decode() == row["snapshot"]
            # A saved snapshot's hash is taken from the snapshot itself.
            assert ShardEngine.books_hash_of(snapshot["books"]) == engine.books_hash()
    return hashes


def test_golden_stream_is_published_byte_for_byte(rows: list[dict[str, Any]]) -> None:
    assert len(rows) == 4000
    # The fixture exercises what it claims to (a guard against a degenerate stream).
    types = {e["type"] for row in rows for p in orjson.loads(row["wire"]) for e in p["events"]}
    assert types == {
        "OrderAccepted", "OrderRejected", "Trade", "OrderFilled", "OrderRested",
        "OrderCancelled", "OrderExpired", "OrderAmended", "CancelRejected", "AmendRejected",
        "BookStateChanged", "DayRolled", "BandChanged", "CommandRejected",
    }  # fmt: skip
    assert replay(ShardEngine(0), rows) == 16


def test_golden_stream_continues_from_the_old_snapshot(rows: list[dict[str, Any]]) -> None:
    middle = next(i for i, row in enumerate(rows) if "snapshot" in row)
    engine = ShardEngine.restore(orjson.loads(rows[middle]["snapshot"]))
    assert engine.head == rows[middle]["seq"]
    assert replay(engine, rows[middle + 1 :]) == 10
