"""Telling a fault that clears by itself (the database restarting, a lost connection, a
serialization failure) from one that repeats whatever the wait (a value the database
refuses): the first is retried where it happened, the second is set aside."""

import asyncpg

from shared.driver import PoolExhausted

#: SQLSTATE classes that a retry of the same transaction can get past: connection
#: exception, transaction rollback (serialization, deadlock), insufficient resources,
#: operator intervention (shutdown, cannot connect now) and system error.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})

_TRANSIENT_TYPES = (
    OSError,  # ConnectionError and TimeoutError included
    asyncpg.InterfaceError,  # the connection closed under the statement
    PoolExhausted,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or what it wraps (``raise ... from``, SQLAlchemy's ``orig``), is a
    transient fault."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        if getattr(current, "connection_invalidated", False) is True:  # SQLAlchemy's flag
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
            return True
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return False
