"""The one source of wall-clock time. Ordering never depends on it: sequence numbers do."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """Format a timestamp as RFC 3339 in UTC with a trailing Z."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not allowed")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
