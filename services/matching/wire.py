"""Book commands in, book events out: the JSON shapes of shared/contracts.py."""

import datetime
from typing import Any

from services.matching.domain import FIELDS, Event
from shared.contracts import BookCommand


class CommandError(ValueError):
    """A command that can never be applied (malformed or for a book this shard lacks)."""


def event_to_wire(event: Event) -> dict[str, Any]:
    """The published object of a raw book event: ``{"type", "seq", ...fields}`` in order."""
    kind = event[0]
    wire: dict[str, Any] = {"type": kind}
    for name, value in zip(FIELDS[kind], event[1:], strict=True):
        wire[name] = value.isoformat() if isinstance(value, datetime.date) else value
    return wire


_REQUIRED: dict[str, tuple[str, ...]] = {
    "list": ("tick_fen", "lot", "min_qty", "band_low_fen", "band_high_fen", "business_date"),
    "new": ("order_id", "member_id", "side", "price_fen", "quantity", "tif"),
    "cancel": ("order_id",),
    "amend": ("order_id", "quantity"),
    "halt": (),
    "resume": (),
    "delist": (),
    "set_band": ("band_low_fen", "band_high_fen"),
    "roll": ("business_date",),
}


def check_command(raw: dict[str, Any]) -> BookCommand:
    name = raw.get("command")
    if name not in _REQUIRED:
        raise CommandError(f"unknown book command {name!r}")
    if name != "roll" and not raw.get("instrument"):
        raise CommandError(f"{name} needs an instrument")
    missing = [f for f in _REQUIRED[name] if f not in raw]
    if missing:
        raise CommandError(f"{name} is missing {', '.join(missing)}")
    return raw  # type: ignore[return-value]
