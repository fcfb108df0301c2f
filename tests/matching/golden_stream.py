"""The golden shard stream (``golden/make_golden.py``): each command with the outputs,
hashes and snapshots the shard gave for it."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

GOLDEN_STREAM = Path(__file__).resolve().parent / "golden" / "shard_stream.jsonl.gz"


def golden_rows() -> list[dict[str, Any]]:
    with gzip.open(GOLDEN_STREAM, "rb") as f:
        return [orjson.loads(line) for line in f]
