"""Time-ordered identifiers, generated where a command is born so a retry carries the same id.

An id is a short prefix naming its kind and the UUIDv7 in Crockford base32 (26 characters,
sortable by creation time), e.g. ``m_01JDZ3...``.
"""

import uuid

import uuid6

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of milliseconds, then randomness; monotonic within a process."""
    return uuid.UUID(int=uuid6.uuid7().int)


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
