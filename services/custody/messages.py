"""What custody writes to its outbox: commands for the matching shards, rejections,
instrument and withdrawal updates for the gateway. Always in the caller's transaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody import views
from shared.contracts import (
    BOOK_COMMAND,
    INSTRUMENT_UPDATED,
    ORDER_REJECTED,
    WITHDRAWAL_UPDATED,
    BookCommand,
    OrderRejected,
    shard_of,
    shard_routing_key,
)
from shared.driver import Tx
from shared.logging import correlation_id_var
from shared.messaging.outbox import Draft, Outbox
from shared.sql import Statement

OUTBOX = Outbox("custody", producer="custody")


def shard_stream(shard: int) -> str:
    """Custody's commands to one shard form one gap-free stream."""
    return f"custody:matching.shard.{shard}"


_DEFERRED = "custody.deferred_shard_commands"


def defer_shard_commands(session: Tx) -> None:
    """From now on in this transaction, commands to shards are collected and written by
    ``write_deferred_shard_commands`` (one outbox statement for a whole batch of orders,
    each shard's in the order they were decided, each with its own correlation id)."""
    session.info[_DEFERRED] = {}


async def write_deferred_shard_commands(session: Tx) -> None:
    deferred = session.info.pop(_DEFERRED, None)
    if not isinstance(deferred, dict):
        return
    await OUTBOX.add_streams(
        session, {shard_stream(shard): deferred[shard] for shard in sorted(deferred)}
    )


async def to_shard(session: Tx, command: BookCommand, shards: int) -> None:
    shard = shard_of(command["instrument"], shards)
    payload: dict[str, Any] = dict(command)
    draft = Draft(
        BOOK_COMMAND, shard_routing_key(shard), payload, correlation_id=correlation_id_var.get()
    )
    deferred = session.info.get(_DEFERRED)
    if isinstance(deferred, dict):
        deferred.setdefault(shard, []).append(draft)
        return
    await OUTBOX.add(session, [draft], stream=shard_stream(shard))


async def order_rejected(
    session: Tx, order_id: str, member_id: str, instrument: str, reason: str
) -> None:
    payload = OrderRejected(
        order_id=order_id, member_id=member_id, instrument=instrument, reason=reason
    )
    await OUTBOX.add(session, [Draft(ORDER_REJECTED, ORDER_REJECTED, dict(payload))])


_PRODUCTS = Statement(
    "SELECT * FROM custody.products WHERE code = ANY(CAST(:codes AS text[])) ORDER BY code"
)


async def instrument_updated(session: Tx, codes: list[str]) -> None:
    rows = await _PRODUCTS.fetch(session, codes=sorted(set(codes)))
    drafts = [
        Draft(INSTRUMENT_UPDATED, INSTRUMENT_UPDATED, views.instrument(SimpleNamespace(**row)))
        for row in rows
    ]
    await OUTBOX.add(session, drafts)


async def withdrawals_updated(session: AsyncSession, rows: list[Any]) -> None:
    """Each withdrawal's new state, with its member's partner, for the partner's
    ``withdrawal.updated`` callback."""
    if not rows:
        return
    partners: dict[str, str] = dict(
        (
            await session.execute(
                text(
                    "SELECT member_id, partner_id FROM custody.members "
                    "WHERE member_id = ANY(CAST(:m AS text[]))"
                ),
                {"m": sorted({row.member_id for row in rows})},
            )
        ).all()
    )
    drafts = []
    for row in rows:
        payload: dict[str, Any] = dict(views.withdrawal(row))
        payload["partner_id"] = partners.get(row.member_id)
        drafts.append(Draft(WITHDRAWAL_UPDATED, WITHDRAWAL_UPDATED, payload))
    await OUTBOX.add(session, drafts)
