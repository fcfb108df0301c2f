"""Custody's message consumers: commands from the gateway and clearing, events from books.

Each handler runs inside the inbox's transaction, so its effects and its outgoing messages
commit together with the record that the message was applied (exactly once)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import Any, cast

from services.custody import book_events, ledger, messages, orders
from services.custody.settings import CustodySettings
from shared.contracts import (
    BOOK_EVENTS,
    BUSINESS_DATE_ROLLED,
    INSTRUMENT_CONTROL,
    ORDER_AMEND,
    ORDER_CANCEL,
    ORDER_SUBMIT,
    OrderAmend,
    OrderCancel,
    OrderSubmit,
    system_queues,
)
from shared.driver import Tx, orm_session
from shared.fees import DEFAULT_FEE_SCHEDULE, FeeSchedule
from shared.logging import correlation_id_var
from shared.messaging.envelope import Envelope
from shared.messaging.inbox import BatchHandler, Handler
from shared.runtime import ConsumerSpec, GroupSpec

log = logging.getLogger(__name__)


#: Commands whose handling needs the ORM session (rare: staff actions, the day's roll);
#: everything else on custody's queues runs on plain driver transactions.
SESSION_COMMANDS = frozenset({INSTRUMENT_CONTROL, BUSINESS_DATE_ROLLED})


def needs_session(envelope: Envelope) -> bool:
    return envelope.type in SESSION_COMMANDS


def command_handler(
    settings: CustodySettings, schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE
) -> Handler:
    shards = settings.matching_shards

    async def handle(session: Tx, envelope: Envelope) -> None:
        payload: dict[str, Any] = envelope.payload
        if envelope.type == ORDER_SUBMIT:
            await orders.submit(session, cast(OrderSubmit, payload), shards, schedule)
        elif envelope.type == ORDER_CANCEL:
            await orders.cancel(session, cast(OrderCancel, payload), shards)
        elif envelope.type == ORDER_AMEND:
            await orders.amend(session, cast(OrderAmend, payload), shards)
        elif envelope.type == INSTRUMENT_CONTROL:
            await orders.control(
                orm_session(session), payload["instrument"], payload["action"], shards
            )
        elif envelope.type == BUSINESS_DATE_ROLLED:
            business_date = date.fromisoformat(payload["business_date"])
            await ledger.set_business_date(orm_session(session), business_date)
        else:
            log.warning("ignoring an unknown command", extra={"type": envelope.type})

    return handle


def command_batch_handler(
    settings: CustodySettings, schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE
) -> BatchHandler:
    """A delivery batch's fresh commands in order: each run of consecutive ``order.submit``
    decided together (``orders.submit_many``), anything else one by one."""
    one = command_handler(settings, schedule)
    shards = settings.matching_shards

    async def handle(session: Tx, envelopes: Sequence[Envelope]) -> None:
        run: list[tuple[OrderSubmit, str | None]] = []
        for envelope in envelopes:
            if envelope.type == ORDER_SUBMIT:
                run.append((cast(OrderSubmit, envelope.payload), envelope.correlation_id))
                continue
            if run:
                await orders.submit_many(session, run, shards, schedule)
                run = []
            token = correlation_id_var.set(envelope.correlation_id)
            try:
                await one(session, envelope)
            finally:
                correlation_id_var.reset(token)
        if run:
            await orders.submit_many(session, run, shards, schedule)

    return handle


async def begin_command_batch(session: Tx, envelopes: Sequence[Envelope]) -> None:
    """Lock the batch's accounts in id order; collect its commands to shards."""
    submits = [cast(OrderSubmit, e.payload) for e in envelopes if e.type == ORDER_SUBMIT]
    await orders.lock_accounts_of_submits(session, submits)
    messages.defer_shard_commands(session)


async def end_command_batch(session: Tx) -> None:
    await messages.write_deferred_shard_commands(session)


async def lock_book_batch(session: Tx, envelopes: Sequence[Envelope]) -> None:
    payloads = [e.payload for e in envelopes if e.type == BOOK_EVENTS]
    await book_events.lock_accounts_of_book_events(session, payloads)


def book_batch_handler(schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE) -> BatchHandler:
    """The fresh messages of a delivery batch, applied together (one statement per kind of
    change); book commands never reach this queue, and anything else is not ours."""

    async def handle(session: Tx, envelopes: Sequence[Envelope]) -> None:
        batch = [
            (e.payload["instrument"], e.payload["events"])
            for e in envelopes
            if e.type == BOOK_EVENTS
        ]
        if batch:
            await book_events.apply_book_messages(session, batch, schedule)

    return handle


def book_handler(schedule: FeeSchedule = DEFAULT_FEE_SCHEDULE) -> Handler:
    """One message alone (the same code as a batch of one)."""
    apply_batch = book_batch_handler(schedule)

    async def handle(session: Tx, envelope: Envelope) -> None:
        await apply_batch(session, [envelope])

    return handle


def consumer_specs(settings: CustodySettings) -> list[ConsumerSpec]:
    queues = {q.name: q for q in system_queues(settings.matching_shards)}
    return [
        ConsumerSpec(
            "commands",
            queues["custody.commands"],
            command_handler(settings),
            batch_begin=begin_command_batch,
            batch_end=end_command_batch,
            batch_handler=command_batch_handler(settings),
            driver=True,
            needs_session=needs_session,
        ),
        ConsumerSpec(
            "book",
            queues["custody.book"],
            book_handler(),
            batch_begin=lock_book_batch,
            batch_handler=book_batch_handler(),
            driver=True,
        ),
    ]


# --- one writer for both queues --------------------------------------------------------------
#
# Reservations (commands) and fills and releases (book events) move the same members'
# accounts. As two consumers, each batch held those rows until its commit while the other's
# waited for them: under load about half of each transaction was that wait. Grouped, one
# writer applies both: a cycle's reservations (on the orders' path to the book) commit
# first, in a transaction of their own, and its book events (fills, releases) follow in
# another, so the orders do not wait for them. Each batch still locks its accounts first,
# in id order (docs/custody.md).


def consumer_groups() -> list[GroupSpec]:
    return [GroupSpec("writer", ("commands", "book"))]
