"""Time-ordered identifiers, generated where a command is born so a retry carries the same id.

An id is a short prefix naming its kind and the UUIDv7 in Crockford base32 (26 characters,
sortable by creation time), e.g. ``m_01JDZ3...``.
"""

import os
import threading
import time
import uuid

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_RANDOM_BITS = 74  # rand_a (12) and rand_b (62) of RFC 9562's layout
_POOL_BYTES = 4096


class _Uuid7Source:
    """UUIDv7s that increase within the process: the millisecond clock, and within one
    millisecond the previous id's random part plus a random step (RFC 9562, 6.2 method 3),
    so ids stay unpredictable and their timestamps stay the clock's. Randomness comes from
    the OS's CSPRNG a few kilobytes at a time: one system call per id had been 4% of the
    gateway's CPU under load (docs/benchmarks.md)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._offset = 0
        self._last_ms = -1
        self._last_random = 0

    def _take(self, count: int) -> int:
        if self._offset + count > len(self._pool):
            self._pool, self._offset = os.urandom(_POOL_BYTES), 0
        chunk = self._pool[self._offset : self._offset + count]
        self._offset += count
        return int.from_bytes(chunk, "big")

    def next(self) -> uuid.UUID:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                # Start low enough in the range that increments have room.
                random = self._take(10) >> (80 - _RANDOM_BITS + 1)
            else:
                ms = self._last_ms
                random = self._last_random + 1 + (self._take(4) >> 8)
                if random >> _RANDOM_BITS:  # the millisecond is used up: borrow the next
                    ms += 1
                    random = self._take(10) >> (80 - _RANDOM_BITS + 1)
            self._last_ms, self._last_random = ms, random
        rand_a, rand_b = random >> 62, random & ((1 << 62) - 1)
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)


_SOURCE = _Uuid7Source()


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of milliseconds, then randomness; increasing within a process."""
    return _SOURCE.next()


def encode_base32(value: int) -> str:
    """Encode a 128-bit integer as 26 Crockford base32 characters."""
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new opaque, time-ordered identifier with a kind prefix."""
    if not prefix.isalnum():
        raise ValueError(f"id prefix must be alphanumeric, got {prefix!r}")
    return f"{prefix}_{encode_base32(uuid7().int)}"
