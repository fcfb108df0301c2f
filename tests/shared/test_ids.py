"""Identifiers: UUIDv7 layout, increasing within a process, timestamps that stay the clock's."""

import itertools
import time
import uuid

from shared.ids import _Uuid7Source, new_id, uuid7


def test_ids_increase_and_keep_the_clocks_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(50_000)]  # far more than one per millisecond
    after = time.time_ns() // 1_000_000
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert {u.version for u in ids} == {7}
    assert {u.variant for u in ids} == {uuid.RFC_4122}
    stamps = [u.int >> 80 for u in ids]
    assert before <= min(stamps)
    assert max(stamps) <= after


def test_a_used_up_millisecond_moves_to_the_next_and_stays_increasing() -> None:
    source = _Uuid7Source()
    first = source.next()
    source._last_random = (1 << 74) - 1  # nothing left above it in this millisecond
    second = source.next()
    assert second.int > first.int
    assert second.int >> 80 > first.int >> 80


def test_new_ids_are_prefixed_sortable_base32() -> None:
    a, b = new_id("o"), new_id("o")
    assert a.startswith("o_")
    assert len(a) == 28
    assert a < b
