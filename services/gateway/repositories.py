"""Every query of the gateway's own tables. Callers own the transaction."""

import base64
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.models import (
    audit_log,
    instruments,
    market_state,
    members,
    orders,
    partners,
    sql_type,
    staff_tokens,
    trades,
    webhook_deliveries,
    webhooks,
)
from shared.clock import utc_now
from shared.driver import Tx
from shared.sql import Statement

_CURSOR_VALUE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
FINAL_STATUSES = frozenset({"filled", "cancelled", "expired", "rejected"})


# --- cursors --------------------------------------------------------------------------


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The value inside a cursor; anything that is not one of ours reads as no cursor."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except ValueError:
        return None
    return raw if _CURSOR_VALUE.match(raw) else None


def decode_int_cursor(cursor: str | None) -> int | None:
    value = decode_cursor(cursor)
    return int(value) if value is not None and value.isdigit() and len(value) <= 18 else None


# --- credentials and audit ------------------------------------------------------------


async def insert_partner(
    session: AsyncSession,
    *,
    partner_id: str,
    name: str,
    api_key: str,
    secret_ciphertext: bytes,
    rate_per_second: int | None,
    rate_burst: int | None,
) -> datetime:
    created_at = utc_now()
    await session.execute(
        partners.insert().values(
            partner_id=partner_id,
            name=name,
            api_key=api_key,
            secret_ciphertext=secret_ciphertext,
            rate_per_second=rate_per_second,
            rate_burst=rate_burst,
            created_at=created_at,
        )
    )
    return created_at


async def insert_staff_token(
    session: AsyncSession, *, token_id: str, name: str, role: str, token_hash: str, created_by: str
) -> datetime:
    created_at = utc_now()
    await session.execute(
        staff_tokens.insert().values(
            token_id=token_id,
            name=name,
            role=role,
            token_hash=token_hash,
            created_by=created_by,
            created_at=created_at,
        )
    )
    return created_at


async def insert_audit(session: AsyncSession, **values: Any) -> None:
    await session.execute(audit_log.insert().values(occurred_at=utc_now(), **values))


async def list_audit(
    session: AsyncSession, *, since: datetime | None, after_id: int | None, limit: int
) -> list[Row[Any]]:
    query = select(audit_log).order_by(audit_log.c.id).limit(limit)
    if since is not None:
        query = query.where(audit_log.c.occurred_at >= since)
    if after_id is not None:
        query = query.where(audit_log.c.id > after_id)
    return list((await session.execute(query)).all())


# --- reference data -------------------------------------------------------------------


async def upsert_instrument(session: AsyncSession, data: dict[str, Any]) -> None:
    """Record what custody says about a product. An update may carry only some fields
    (a new holder count, a new reference price): they are merged into what is known,
    and the state changes only when the update names one."""
    code = str(data["code"])
    now = utc_now()
    stmt = pg_insert(instruments).values(
        code=code, state=str(data.get("state") or "trading"), data=data, updated_at=now
    )
    set_: dict[str, Any] = {
        "data": instruments.c.data.op("||")(stmt.excluded.data),
        "updated_at": now,
    }
    if data.get("state"):
        set_["state"] = stmt.excluded.state
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[instruments.c.code], set_=set_)
    )


async def set_instrument_state(session: AsyncSession, code: str, state: str) -> None:
    await session.execute(
        update(instruments)
        .where(instruments.c.code == code)
        .values(
            state=state,
            data=instruments.c.data.op("||")(func.jsonb_build_object("state", state)),
            updated_at=utc_now(),
        )
    )


async def get_instrument(session: AsyncSession, code: str) -> Row[Any] | None:
    return (await session.execute(select(instruments).where(instruments.c.code == code))).first()


async def get_member(session: AsyncSession, member_id: str) -> Row[Any] | None:
    return (await session.execute(select(members).where(members.c.member_id == member_id))).first()


async def partner_of_member(session: AsyncSession, member_id: str) -> str | None:
    row = await get_member(session, member_id)
    return None if row is None else str(row.partner_id)


async def partners_of_members(session: AsyncSession, member_ids: set[str]) -> dict[str, str]:
    if not member_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT member_id, partner_id FROM gateway.members "
            "WHERE member_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": sorted(member_ids)},
    )
    return {str(member_id): str(partner_id) for member_id, partner_id in rows.all()}


async def upsert_member(
    session: AsyncSession, *, member_id: str, partner_id: str, qualified: bool, risk_tolerance: str
) -> None:
    stmt = pg_insert(members).values(
        member_id=member_id,
        partner_id=partner_id,
        qualified=qualified,
        risk_tolerance=risk_tolerance,
        fetched_at=utc_now(),
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[members.c.member_id],
            set_={
                "qualified": stmt.excluded.qualified,
                "risk_tolerance": stmt.excluded.risk_tolerance,
                "fetched_at": stmt.excluded.fetched_at,
            },
        )
    )


async def get_business_date(session: AsyncSession) -> date | None:
    value = (
        await session.execute(
            select(market_state.c.value).where(market_state.c.key == "business_date")
        )
    ).scalar_one_or_none()
    return date.fromisoformat(value) if value else None


async def set_business_date(
    session: AsyncSession, business_date: str, *, only_forward: bool
) -> None:
    date.fromisoformat(business_date)  # refuse anything else
    stmt = pg_insert(market_state).values(key="business_date", value=business_date)
    set_ = {"value": stmt.excluded.value}
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[market_state.c.key],
            set_=set_,
            where=(market_state.c.value < stmt.excluded.value) if only_forward else None,
        )
    )


# --- orders ---------------------------------------------------------------------------


async def insert_order(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the order view; False when the partner already used the client_order_id."""
    row = (
        await session.execute(
            pg_insert(orders)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[orders.c.partner_id, orders.c.client_order_id])
            .returning(orders.c.order_id)
        )
    ).first()
    return row is not None


_ORDER_FIELDS = ", ".join(c.name for c in orders.columns)
_ORDERS_BY_IDS = Statement(
    f"SELECT {_ORDER_FIELDS} FROM gateway.orders WHERE order_id = ANY(CAST(:ids AS text[]))"
)


async def get_orders_by_ids(session: Tx, order_ids: set[str]) -> list[dict[str, Any]]:
    """Orders by id, as dicts by column, with one statement text whatever their number (an
    expanding IN is compiled, and prepared by PostgreSQL, anew for every count of ids); on
    the driver (``shared.sql``): the view updater runs it for every message batch."""
    if not order_ids:
        return []
    return [dict(row) for row in await _ORDERS_BY_IDS.fetch(session, ids=sorted(order_ids))]


async def get_order_by_client_id(
    session: AsyncSession, partner_id: str, client_order_id: str
) -> Row[Any] | None:
    return (
        await session.execute(
            select(orders).where(
                orders.c.partner_id == partner_id, orders.c.client_order_id == client_order_id
            )
        )
    ).first()


async def get_order(
    session: AsyncSession, order_id: str, *, partner_id: str | None = None, for_update: bool = False
) -> Row[Any] | None:
    query = select(orders).where(orders.c.order_id == order_id)
    if partner_id is not None:
        query = query.where(orders.c.partner_id == partner_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def list_orders(
    session: AsyncSession,
    *,
    partner_id: str,
    member_id: str | None,
    instrument: str | None,
    status: str | None,
    before: str | None,
    limit: int,
) -> list[Row[Any]]:
    conditions = [orders.c.partner_id == partner_id]
    if member_id is not None:
        conditions.append(orders.c.member_id == member_id)
    if instrument is not None:
        conditions.append(orders.c.instrument == instrument)
    if status is not None:
        conditions.append(orders.c.status == status)
    if before is not None:
        conditions.append(orders.c.order_id < before)
    query = select(orders).where(and_(*conditions)).order_by(orders.c.order_id.desc()).limit(limit)
    return list((await session.execute(query)).all())


async def update_order(session: AsyncSession, order_id: str, **values: Any) -> None:
    values["updated_at"] = utc_now()
    await session.execute(update(orders).where(orders.c.order_id == order_id).values(**values))


# --- trades ---------------------------------------------------------------------------


async def insert_trade(session: AsyncSession, values: dict[str, Any]) -> bool:
    row = (
        await session.execute(
            pg_insert(trades)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[trades.c.trade_id, trades.c.order_id])
            .returning(trades.c.id)
        )
    ).first()
    return row is not None


async def list_trades(
    session: AsyncSession,
    *,
    partner_id: str,
    member_id: str | None,
    instrument: str | None,
    business_date: date | None,
    before: int | None,
    limit: int,
) -> list[Row[Any]]:
    conditions = [trades.c.partner_id == partner_id]
    if member_id is not None:
        conditions.append(trades.c.member_id == member_id)
    if instrument is not None:
        conditions.append(trades.c.instrument == instrument)
    if business_date is not None:
        conditions.append(trades.c.business_date == business_date)
    if before is not None:
        conditions.append(trades.c.id < before)
    query = select(trades).where(and_(*conditions)).order_by(trades.c.id.desc()).limit(limit)
    return list((await session.execute(query)).all())


# --- webhooks -------------------------------------------------------------------------


async def insert_webhook(
    session: AsyncSession, *, webhook_id: str, partner_id: str, url: str, events: Sequence[str]
) -> datetime:
    created_at = utc_now()
    await session.execute(
        webhooks.insert().values(
            webhook_id=webhook_id,
            partner_id=partner_id,
            url=url,
            events=events,
            created_at=created_at,
        )
    )
    return created_at


async def list_webhooks(session: AsyncSession, partner_id: str) -> list[Row[Any]]:
    return list(
        (
            await session.execute(
                select(webhooks)
                .where(webhooks.c.partner_id == partner_id)
                .order_by(webhooks.c.webhook_id)
            )
        ).all()
    )


_WEBHOOKS_OF = Statement(
    "SELECT partner_id, webhook_id, events FROM gateway.webhooks "
    "WHERE partner_id = ANY(CAST(:partner_ids AS text[]))"
)


async def webhooks_of(session: Tx, partner_ids: set[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """The webhooks of these partners, by partner, as (webhook_id, events): one statement
    for a whole batch of the view updater, on the driver (it runs on every batch)."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for row in await _WEBHOOKS_OF.fetch(session, partner_ids=sorted(partner_ids)):
        found.setdefault(row["partner_id"], []).append((row["webhook_id"], list(row["events"])))
    return found


_DELIVERY_COLUMNS = (
    "event_id",
    "webhook_id",
    "partner_id",
    "event_type",
    "body",
    "attempts",
    "next_attempt_at",
    "created_at",
)
_INSERT_DELIVERIES = Statement(
    f"""
    INSERT INTO gateway.webhook_deliveries ({", ".join(_DELIVERY_COLUMNS)})
    SELECT * FROM unnest({
        ", ".join(f"CAST(:{c} AS {sql_type(webhook_deliveries, c)}[])" for c in _DELIVERY_COLUMNS)
    })
    ON CONFLICT (event_id) DO NOTHING
    """
)


async def insert_deliveries(session: Tx, rows: list[dict[str, Any]]) -> None:
    """One statement for a batch's callbacks, on the driver (the view updater's path)."""
    if rows:
        await _INSERT_DELIVERIES.execute(
            session, **{c: [row[c] for row in rows] for c in _DELIVERY_COLUMNS}
        )
