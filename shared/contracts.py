"""The messages services exchange: routing keys, queues, and payload shapes.

Every payload is a JSON object inside an :class:`~shared.messaging.envelope.Envelope`.
Inside messages money and prices are integers of fen (``*_fen``), quantities integers of
units, sides ``BUY``/``SELL``, dates ``YYYY-MM-DD``. See docs/flows.md for the order's path.
"""

import zlib
from typing import Any, Literal, NotRequired, TypedDict

from shared.messaging.topology import QueueSpec

Side = Literal["BUY", "SELL"]
TimeInForce = Literal["GTC", "DAY", "IOC", "FOK"]

# Routing keys (also the envelope's `type`, except book commands and events).
ORDER_SUBMIT = "order.submit"  # gateway -> custody
ORDER_CANCEL = "order.cancel"  # gateway -> custody
ORDER_AMEND = "order.amend"  # gateway -> custody
ORDER_REJECTED = "order.rejected"  # custody -> gateway (pre-trade checks)
INSTRUMENT_CONTROL = "instrument.control"  # gateway -> custody (halt, resume, delist)
INSTRUMENT_UPDATED = "instrument.updated"  # custody -> gateway (listing, state, holders)
BOOK_COMMAND = "book.command"  # envelope type of every message to a matching shard
BOOK_EVENTS = "book.events"  # envelope type of every message from a book
BUSINESS_DATE_ROLLED = "business_date.rolled"  # clearing -> custody, gateway
WITHDRAWAL_UPDATED = "withdrawal.updated"  # custody -> gateway (a withdrawal changed status)
SETTLEMENT_COMPLETED = "settlement.completed"  # clearing -> gateway (a day is settled)

#: Default number of matching shards; products are spread over them by code.
DEFAULT_MATCHING_SHARDS = 2


def shard_of(instrument: str, shards: int) -> int:
    """The matching shard that owns a product: stable across processes and restarts."""
    return zlib.crc32(instrument.encode()) % shards


def shard_routing_key(shard: int) -> str:
    return f"matching.shard.{shard}"


def book_routing_key(instrument: str) -> str:
    return f"book.{instrument}"


def book_stream(instrument: str) -> str:
    """The envelope stream of one book's events; its sequence numbers have no gaps."""
    return f"book:{instrument}"


def system_queues(matching_shards: int = DEFAULT_MATCHING_SHARDS) -> tuple[QueueSpec, ...]:
    """Every queue of the system. Consumers that must see their messages in order are
    single-active-consumer queues: a second instance waits as a hot standby."""
    shards = tuple(
        QueueSpec(f"matching.shard.{k}", (shard_routing_key(k),), single_active_consumer=True)
        for k in range(matching_shards)
    )
    return (
        QueueSpec(
            "custody.commands",
            (ORDER_SUBMIT, ORDER_CANCEL, ORDER_AMEND, INSTRUMENT_CONTROL, BUSINESS_DATE_ROLLED),
            single_active_consumer=True,
        ),
        QueueSpec("custody.book", ("book.#",), single_active_consumer=True),
        *shards,
        QueueSpec(
            "gateway.events",
            (
                ORDER_REJECTED,
                INSTRUMENT_UPDATED,
                BUSINESS_DATE_ROLLED,
                WITHDRAWAL_UPDATED,
                SETTLEMENT_COMPLETED,
                "book.#",
            ),
            single_active_consumer=True,
        ),
        QueueSpec("clearing.book", ("book.#",), single_active_consumer=True),
    )


class OrderSubmit(TypedDict):
    """gateway -> custody: a new order that passed static validation."""

    order_id: str
    client_order_id: str
    partner_id: str
    member_id: str
    instrument: str
    side: Side
    price_fen: int
    quantity: int
    time_in_force: TimeInForce


class OrderCancel(TypedDict):
    """gateway -> custody -> matching: travels the order's path so it cannot overtake it."""

    order_id: str
    member_id: str
    instrument: str


class OrderAmend(TypedDict):
    """gateway -> custody -> matching: reduce the total quantity, keeping priority."""

    order_id: str
    member_id: str
    instrument: str
    quantity: int


class OrderRejected(TypedDict):
    """custody -> gateway: the order failed a balance or eligibility check; never reached a book."""

    order_id: str
    member_id: str
    instrument: str
    reason: str


class InstrumentControl(TypedDict):
    """gateway -> custody: an admin's halt, resume or delist."""

    instrument: str
    action: Literal["halt", "resume", "delist"]


class BusinessDateRolled(TypedDict):
    """clearing -> custody, gateway: the business date is now ``business_date``; day
    ``previous_date`` takes no new deposits, withdrawals or trades."""

    previous_date: str
    business_date: str


class WithdrawalUpdated(TypedDict):
    """custody -> gateway: a withdrawal's resource after a change of status (``pending``
    when requested, ``sent`` when the day's settlement posts it, ``completed`` when the
    bank's statement shows it); amounts as decimal strings, as in the public API, plus
    the member's ``partner_id`` (not part of the resource)."""

    withdrawal_id: str
    member_id: str
    amount: str
    status: str
    business_date: str
    created_at: str
    updated_at: str
    partner_id: str | None


class SettledMember(TypedDict):
    member_id: str
    net_cash: str
    fees: str
    net_after_fees: str
    withdrawals: str


class SettlementCompleted(TypedDict):
    """clearing -> gateway: business date ``business_date`` is settled (ledger posted,
    instruction file written); each member's cash result, as in the settlement report."""

    business_date: str
    batch_id: str
    members: list[SettledMember]


BookCommandName = Literal[
    "list", "new", "cancel", "amend", "halt", "resume", "delist", "set_band", "roll"
]


class BookCommand(TypedDict):
    """custody or clearing -> a matching shard (routing key ``matching.shard.{k}``).

    ``list`` creates a book (tick_fen, lot, min_qty, band_low_fen, band_high_fen,
    reference_price_fen, business_date, state); ``new`` carries order_id, member_id, side, price_fen, quantity,
    tif; ``cancel`` order_id; ``amend`` order_id, quantity; ``set_band`` band_low_fen,
    band_high_fen; ``roll`` business_date (the new date) and applies to every book of
    the shard, with ``instrument`` empty.
    """

    command: BookCommandName
    instrument: str
    order_id: NotRequired[str]
    member_id: NotRequired[str]
    side: NotRequired[Side]
    price_fen: NotRequired[int]
    quantity: NotRequired[int]
    tif: NotRequired[TimeInForce]
    tick_fen: NotRequired[int]
    lot: NotRequired[int]
    min_qty: NotRequired[int]
    band_low_fen: NotRequired[int]
    band_high_fen: NotRequired[int]
    reference_price_fen: NotRequired[int]
    business_date: NotRequired[str]
    state: NotRequired[str]


class BookEvents(TypedDict):
    """matching -> everyone (routing key ``book.{instrument}``, stream ``book:{instrument}``).

    The events one command produced, in book sequence. Each event is the book's event as
    an object: ``{"type": "Trade", "seq": 17, ...fields}`` (see
    services/matching/domain/events.py), dates as ``YYYY-MM-DD``.
    """

    instrument: str
    #: When the engine applied the command (RFC 3339): the trades' execution time.
    executed_at: str
    events: list[dict[str, Any]]
