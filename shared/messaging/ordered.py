"""Committing a consumer's deliveries so that a failure never reorders them.

A delivery returned to its queue (a nack with requeue) comes back after the deliveries
already buffered behind it: a cancel could be applied before its order. So a failed
batch is never returned:

- a transient fault (``shared.transient``: a lost connection, a serialization failure, a
  database restarting) is retried in place, with backoff, until it clears;
- any other failure is narrowed down by committing the deliveries one at a time, in
  order; one that fails alone ``POISON_ATTEMPTS`` times is handed to ``set_aside`` (which
  dead-letters it) and the rest go on;
- deliveries whose channel has closed (before or meanwhile) are the broker's again: it
  redelivers them, in order, to whichever consumer is active, so neither they nor anything
  after them may be applied.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from shared.messaging.envelope import Envelope
from shared.transient import is_transient

log = logging.getLogger(__name__)

#: Commits a delivery that fails alone, for no transient reason, gets before it is set aside.
POISON_ATTEMPTS = 3
#: The longest wait between two attempts at a transient fault.
MAX_BACKOFF_SECONDS = 2.0

#: One AMQP message and the envelopes it carried (one, or a bundle).
Delivery = tuple[AbstractIncomingMessage, list[Envelope]]


def channel_open(message: AbstractIncomingMessage) -> bool:
    """Whether the message can still be acknowledged (its channel has not closed)."""
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:
        return False


def backoff(attempt: int) -> float:
    return float(min(0.1 * 2**attempt, MAX_BACKOFF_SECONDS))


async def commit_in_order(
    deliveries: Sequence[Delivery],
    commit: Callable[[Sequence[Delivery]], Awaitable[None]],
    *,
    set_aside: Callable[[Delivery], Awaitable[None]],
    name: str,
    on_failure: Callable[[], None] | None = None,
) -> bool:
    """``commit`` the deliveries (apply, commit, acknowledge) as the module says. False
    when their channel closed before they committed: the caller must not apply any
    delivery of that channel after them."""
    deliveries = [delivery for delivery in deliveries if channel_open(delivery[0])]
    if not deliveries:
        return False
    attempt = 0
    while True:
        try:
            await commit(deliveries)
            return True
        except Exception as exc:
            if on_failure is not None:
                on_failure()
            attempt += 1
            if not channel_open(deliveries[0][0]):
                log.warning(
                    "deliveries not applied, and their channel closed", extra={"consumer": name}
                )
                return False
            if is_transient(exc):
                log.warning(
                    "deliveries not applied; retrying",
                    exc_info=True,
                    extra={"consumer": name, "attempt": attempt},
                )
            elif len(deliveries) > 1:
                log.warning(
                    "deliveries not applied; committing them one at a time",
                    exc_info=True,
                    extra={"consumer": name, "deliveries": len(deliveries)},
                )
                for delivery in deliveries:
                    if not await commit_in_order(
                        [delivery],
                        commit,
                        set_aside=set_aside,
                        name=name,
                        on_failure=on_failure,
                    ):
                        return False
                return True
            elif attempt >= POISON_ATTEMPTS:
                log.exception(
                    "delivery set aside: it failed every time",
                    extra={
                        "consumer": name,
                        "message_id": deliveries[0][0].message_id,
                        "attempts": attempt,
                    },
                )
                await set_aside(deliveries[0])
                return True
            await asyncio.sleep(backoff(attempt))


async def salvage_bundle(
    delivery: Delivery,
    apply: Callable[[Sequence[Delivery]], Awaitable[None]],
    *,
    name: str,
    on_failure: Callable[[], None] | None = None,
) -> bool:
    """Of a bundle being set aside, apply what can be: its messages one at a time, in order,
    each committed as ``commit_in_order`` commits a delivery (a transient fault waited out
    in place, a message that keeps failing passed over); the consumer's dedup drops the
    applied ones if the bundle is replayed. True when nothing is left to set aside: every
    message applied (the bundle is acknowledged) or the channel closed (the broker
    redelivers the bundle). False for a single message, or when one failed every time."""
    message, envelopes = delivery
    if len(envelopes) < 2:
        return False
    failed: list[Envelope] = []

    async def pass_over(single: Delivery) -> None:
        failed.extend(single[1])
        log.warning(
            "message in a bundle failed",
            extra={"consumer": name, "message_id": single[1][0].message_id},
        )

    # Each message alone from the start: together they are the bundle, which has just
    # failed every time.
    for envelope in envelopes:
        if not await commit_in_order(
            [(message, [envelope])], apply, set_aside=pass_over, name=name, on_failure=on_failure
        ):
            return True
    if failed:
        return False
    await message.ack()
    return True
