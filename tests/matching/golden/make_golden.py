"""Write ``shard_stream.jsonl.gz``: a seeded command stream and what the shard published.

The fixture pins the matching service's published output (the ``book.events`` payloads,
byte for byte as ``orjson`` encodes them for the outbox), the books' state hashes and the
shard snapshots, so that changes to the book's in-process representation can be proved
not to change the wire. It was produced by running this script against the code of
commit e5fe868 (main, before the book's events became plain tuples)::

    .venv/bin/python -m tests.matching.golden.make_golden

Re-running it on later code must give the same file (``test_golden_stream`` checks the
equivalent in memory); only regenerate it on purpose, for an intended wire change.

Each line is a JSON object: ``{"seq", "executed_at", "command", "wire"}`` with ``wire``
the exact orjson bytes (as text) of the list of payloads the command produced, plus
``"hash"`` (``books_hash()`` after the command) every 250 commands and ``"snapshot"``
(the shard snapshot, orjson text) at commands 1500 and at the end.
"""

from __future__ import annotations

import datetime
import gzip
import random
from pathlib import Path
from typing import Any

import orjson

from services.matching.engine import ShardEngine
from services.matching.shard import output_payload

FIXTURE = Path(__file__).with_name("shard_stream.jsonl.gz")
SEED = 20261122
COMMANDS = 4000
HASH_EVERY = 250
SNAPSHOT_AT = (1500, COMMANDS)


def commands(seed: int = SEED, count: int = COMMANDS) -> list[dict[str, Any]]:
    """A seeded mix of every book command, valid and invalid, on two products."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = [
        {
            "command": "list",
            "instrument": "GA",
            "tick_fen": 5,
            "lot": 10,
            "min_qty": 20,
            "band_low_fen": 900,
            "band_high_fen": 1100,
            "reference_price_fen": 1000,
            "business_date": "2026-11-20",
            "state": "trading",
        },
        {
            "command": "list",
            "instrument": "GB",
            "tick_fen": 1,
            "lot": 1,
            "min_qty": 1,
            "band_low_fen": 9000,
            "band_high_fen": 11000,
            "business_date": "2026-11-20",
        },
    ]
    ids: dict[str, list[str]] = {"GA": [], "GB": []}
    day = 20
    n = 0
    while len(out) < count:
        n += 1
        code = "GA" if rnd.random() < 0.6 else "GB"
        r = rnd.random()
        if r < 0.55:
            if code == "GA":
                price = rnd.randrange(196, 205) * 5
                if rnd.random() < 0.1:
                    price = rnd.choice([895, 1105, 1002, 900, 1100])
                qty = rnd.randrange(2, 12) * 10
                if rnd.random() < 0.1:
                    qty = rnd.choice([10, 15, 0, -10])
            else:
                price = rnd.randrange(9950, 10051)
                qty = rnd.randrange(1, 60)
            reused = ids[code] and rnd.random() < 0.03
            order_id = rnd.choice(ids[code]) if reused else f"{code}-{n}"
            ids[code].append(order_id)
            side = rnd.choice(
                ["BUY", "SELL", "BUY", "SELL", "BUY", "SELL", "HOLD"][: 6 + (rnd.random() < 0.02)]
            )
            tif = rnd.choice(["GTC", "GTC", "GTC", "DAY", "DAY", "IOC", "FOK"])
            if rnd.random() < 0.01:
                tif = "GTD"
            out.append(
                {
                    "command": "new",
                    "instrument": code,
                    "order_id": order_id,
                    "member_id": rnd.choice(["m1", "m2", "m3", "m4"]),
                    "side": side,
                    "price_fen": price,
                    "quantity": qty,
                    "tif": tif,
                }
            )
        elif r < 0.80:
            target = rnd.choice(ids[code]) if ids[code] and rnd.random() < 0.95 else "nope"
            out.append({"command": "cancel", "instrument": code, "order_id": target})
        elif r < 0.92:
            target = rnd.choice(ids[code]) if ids[code] and rnd.random() < 0.95 else "nope"
            qty = rnd.randrange(1, 6) * (10 if code == "GA" else 1) + (rnd.random() < 0.1)
            out.append(
                {"command": "amend", "instrument": code, "order_id": target, "quantity": qty}
            )
        elif r < 0.935:
            out.append({"command": "halt" if rnd.random() < 0.3 else "resume", "instrument": code})
        elif r < 0.97:
            low, high = (900, 1100) if code == "GA" else (9000, 11000)
            if rnd.random() < 0.3:
                low, high = rnd.choice([(low + 3, high), (high, low), (0, high)])
            elif rnd.random() < 0.5:
                low, high = low + 50, high - 50
            out.append(
                {
                    "command": "set_band",
                    "instrument": code,
                    "band_low_fen": low,
                    "band_high_fen": high,
                }
            )
        elif r < 0.985:
            if rnd.random() < 0.8:
                day += 1
            date = datetime.date(2026, 11, 1) + datetime.timedelta(days=day - 1)
            out.append({"command": "roll", "business_date": date.isoformat()})
        elif r < 0.99:
            out.append({"command": "bogus", "instrument": code})
        elif r < 0.993:
            out.append(
                {
                    "command": "new",
                    "instrument": "NOBOOK",
                    "order_id": "x",
                    "member_id": "m1",
                    "side": "BUY",
                    "price_fen": 1,
                    "quantity": 1,
                    "tif": "GTC",
                }
            )
        else:
            out.append({"command": "cancel", "instrument": code})  # malformed: no order_id
        if n == 3000:
            out.append({"command": "delist", "instrument": "GB"})
            out.append({"command": "delist", "instrument": "GB"})
    return out[:count]


def executed_at(seq: int) -> str:
    return f"2026-11-20T09:{(seq // 60) % 60:02d}:{seq % 60:02d}.{seq:06d}Z"


def lines(engine: ShardEngine, stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the stream to ``engine`` and record what a fixture line holds."""
    rows: list[dict[str, Any]] = []
    for seq, command in enumerate(stream, start=1):
        outputs = engine.apply(seq, command, executed_at(seq))
        row: dict[str, Any] = {
            "seq": seq,
            "executed_at": executed_at(seq),
            "command": command,
            "wire": orjson.dumps([output_payload(o) for o in outputs]).decode(),
        }
        if seq % HASH_EVERY == 0:
            row["hash"] = engine.books_hash()
        if seq in SNAPSHOT_AT:
            row["snapshot"] = orjson.dumps(engine.snapshot()).decode()
        rows.append(row)
    return rows


def main() -> None:
    rows = lines(ShardEngine(0), commands())
    with gzip.open(FIXTURE, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    print(f"wrote {len(rows)} commands to {FIXTURE}")


if __name__ == "__main__":
    main()
