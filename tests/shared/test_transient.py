"""Which faults a retry of the same work gets past."""

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from shared.driver import PoolExhausted
from shared.transient import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        PoolExhausted("busy"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.AdminShutdownError("terminating"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_faults_that_clear_by_themselves(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        KeyError("missing"),
        asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax for uuid"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("no such table"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_faults_that_repeat(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_wrapped_fault_is_judged_by_what_it_wraps() -> None:
    outer = RuntimeError("statement failed")
    outer.__cause__ = OSError("reset by peer")  # raise ... from
    assert is_transient(outer)
    wrapped = DBAPIError("SELECT 1", {}, asyncpg.exceptions.SerializationError("retry"))
    assert is_transient(wrapped)
    data = DBAPIError("SELECT 1", {}, asyncpg.exceptions.InvalidTextRepresentationError("x"))
    assert not is_transient(data)


def test_an_exception_raised_while_handling_a_transient_one_is_judged_by_itself() -> None:
    bug = ValueError("a bug in the handler")
    bug.__context__ = OSError("reset by peer")  # raised in the except block, not from it
    assert not is_transient(bug)
