"""The hash chain of the journal: each entry's hash covers the previous hash, the entry and
every posting in it, so altering or removing any row breaks the chain."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

GENESIS_HASH = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PostingLine:
    account_id: int
    asset: str
    amount: int
    kind: str
    reference: str


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def entry_hash(
    prev_hash: str,
    seq: int,
    entry_id: str,
    kind: str,
    reference: str,
    business_date: date,
    created_at: datetime,
    postings: Sequence[PostingLine],
) -> str:
    body = orjson.dumps(
        [
            prev_hash,
            seq,
            entry_id,
            kind,
            reference,
            business_date.isoformat(),
            micros(created_at),
            [[p.account_id, p.asset, p.amount, p.kind, p.reference] for p in postings],
        ]
    )
    return hashlib.sha256(body).hexdigest()


def unbalanced_assets(postings: Sequence[PostingLine]) -> dict[str, int]:
    """Assets whose postings in one entry do not sum to zero (empty when balanced)."""
    sums: dict[str, int] = {}
    for p in postings:
        sums[p.asset] = sums.get(p.asset, 0) + p.amount
    return {asset: total for asset, total in sums.items() if total != 0}
