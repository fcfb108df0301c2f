"""The registry (登记): members with their sub-accounts, products and primary allocations."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.custody import ledger, messages, repository
from services.custody.domain.journal import PostingLine
from services.custody.domain.products import (
    CODE_RE,
    PRODUCT_TYPES,
    RISK_LEVELS,
    check_yield,
    price_band,
)
from services.custody.schemas import AllocationRequest, InstrumentCreate, MemberCreate
from services.custody.settings import CustodySettings
from shared.clock import utc_now
from shared.contracts import BookCommand
from shared.driver import Tx
from shared.errors import ProblemError
from shared.ids import new_id
from shared.money import MAX_UNITS, MoneyError, parse_fen
from shared.sql import Statement


def unknown_member(member_id: str) -> ProblemError:
    return ProblemError(404, "UNKNOWN_MEMBER", f"no member {member_id}")


async def create_member(
    session: AsyncSession, body: MemberCreate, settings: CustodySettings
) -> Row[Any]:
    existing = (
        await session.execute(
            text(
                "SELECT member_id FROM custody.members WHERE partner_id = :p AND external_ref = :r"
            ),
            {"p": body.partner_id, "r": body.external_ref},
        )
    ).first()
    if existing is not None:
        raise ProblemError(
            409,
            "MEMBER_EXISTS",
            f"external_ref {body.external_ref!r} is already member {existing.member_id}",
            extra={"member_id": existing.member_id},
        )
    serial = (
        await session.execute(text("SELECT nextval('custody.sub_account_serial')"))
    ).scalar_one()
    sub_account = f"{settings.sub_account_prefix}{serial:0{settings.sub_account_digits}d}"
    member_id = new_id("m")
    try:
        async with session.begin_nested():
            await session.execute(
                text(
                    """
                    INSERT INTO custody.members (member_id, partner_id, external_ref, name, kind,
                        qualified, risk_tolerance, sub_account, created_at)
                    VALUES (:member_id, :partner_id, :external_ref, :name, :kind, :qualified,
                        :risk_tolerance, :sub_account, :created_at)
                    """
                ),
                {
                    "member_id": member_id,
                    "sub_account": sub_account,
                    "created_at": utc_now(),
                    **body.model_dump(),
                },
            )
    except IntegrityError as exc:  # a concurrent onboarding of the same external_ref
        raise ProblemError(
            409, "MEMBER_EXISTS", f"external_ref {body.external_ref!r} already exists"
        ) from exc
    await ledger.account_id(session, ("member", member_id, "CNY"))
    row = await repository.get_member(session, member_id)
    assert row is not None
    return row


async def member_of_partner(
    session: AsyncSession, member_id: str, partner_id: str | None
) -> Row[Any]:
    """The member, or 404 when it does not exist or belongs to another partner."""
    row = await repository.get_member(session, member_id)
    if row is None or (partner_id is not None and row.partner_id != partner_id):
        raise unknown_member(member_id)
    return row


def _invalid(detail: str) -> ProblemError:
    return ProblemError(422, "INVALID_INSTRUMENT", detail)


def _fen(name: str, value: str, *, positive: bool = True) -> int:
    try:
        fen = parse_fen(value)
    except MoneyError as exc:
        raise ProblemError(422, exc.code, f"{name}: {exc}") from exc
    if positive and fen <= 0:
        raise _invalid(f"{name} must be positive")
    return fen


def validate_instrument(body: InstrumentCreate) -> dict[str, Any]:
    """The product's columns, or a problem naming the first invalid attribute."""
    if not CODE_RE.match(body.code):
        raise _invalid("code must match [A-Z0-9]{4,16}")
    if body.product_type not in PRODUCT_TYPES:
        raise _invalid(f"product_type must be one of {', '.join(PRODUCT_TYPES)}")
    if body.risk_level not in RISK_LEVELS:
        raise _invalid("risk_level must be R1..R5")
    for name, value in (
        ("issue_size", body.issue_size),
        ("lot_size", body.lot_size),
        ("min_order_qty", body.min_order_qty),
        ("term_days", body.term_days),
        ("max_holders", body.max_holders),
    ):
        if value <= 0 or value > MAX_UNITS:
            raise _invalid(f"{name} must be a positive integer")
    face_value = _fen("face_value", body.face_value)
    tick = _fen("tick_size", body.tick_size)
    reference = _fen("reference_price", body.reference_price)
    min_value = _fen("min_order_value", body.min_order_value, positive=False)
    try:
        check_yield(body.expected_yield)
    except ValueError as exc:
        raise _invalid(f"expected_yield: {exc}") from exc
    if body.min_order_qty % body.lot_size:
        raise _invalid("min_order_qty must be a whole number of lots")
    if body.min_order_qty > body.issue_size:
        raise _invalid("min_order_qty must not exceed issue_size")
    try:
        low, high = price_band(reference, body.price_band_pct, tick)
    except ValueError as exc:
        raise _invalid(f"price_band_pct: {exc}") from exc
    if low <= 0:
        low = tick
    if low > high:
        raise _invalid("the price band holds no tick")
    return {
        "code": body.code,
        "name": body.name,
        "issuer": body.issuer,
        "product_type": body.product_type,
        "face_value_fen": face_value,
        "issue_size": body.issue_size,
        "expected_yield": body.expected_yield,
        "term_days": body.term_days,
        "maturity_date": body.maturity_date,
        "risk_level": body.risk_level,
        "tick_fen": tick,
        "lot_size": body.lot_size,
        "min_order_qty": body.min_order_qty,
        "min_order_value_fen": min_value,
        "price_band_pct": body.price_band_pct,
        "reference_price_fen": reference,
        "band_low_fen": low,
        "band_high_fen": high,
        "max_holders": body.max_holders,
        "transferable": body.transferable,
        "disclosure": body.disclosure,
    }


async def create_instrument(
    session: AsyncSession, body: InstrumentCreate, settings: CustodySettings
) -> Row[Any]:
    """Register a product: the whole issue enters the issuer's account, the shard gets a
    ``list`` command and the gateway an ``instrument.updated``."""
    columns = validate_instrument(body)
    now = utc_now()
    inserted = (
        await session.execute(
            text(
                """
                INSERT INTO custody.products (code, name, issuer, product_type, face_value_fen,
                    issue_size, expected_yield, term_days, maturity_date, risk_level, tick_fen,
                    lot_size, min_order_qty, min_order_value_fen, price_band_pct,
                    reference_price_fen, band_low_fen, band_high_fen, max_holders, transferable,
                    disclosure, state, holder_count, created_at, updated_at)
                VALUES (:code, :name, :issuer, :product_type, :face_value_fen, :issue_size,
                    :expected_yield, :term_days, :maturity_date, :risk_level, :tick_fen,
                    :lot_size, :min_order_qty, :min_order_value_fen, :price_band_pct,
                    :reference_price_fen, :band_low_fen, :band_high_fen, :max_holders,
                    :transferable, CAST(:disclosure AS jsonb), 'trading', 0, :now, :now)
                ON CONFLICT (code) DO NOTHING
                RETURNING code
                """
            ),
            {**columns, "disclosure": _json(columns["disclosure"]), "now": now},
        )
    ).first()
    if inserted is None:
        raise ProblemError(409, "INSTRUMENT_EXISTS", f"instrument {body.code} already exists")
    code = body.code
    ids = await ledger.ensure_accounts(session, [("issuance", code, code), ("issuer", code, code)])
    business_date = await ledger.current_business_date(session)
    await ledger.post(
        session,
        kind="ISSUANCE",
        reference=code,
        business_date=business_date,
        postings=[
            PostingLine(ids[("issuance", code, code)], code, -body.issue_size, "ISSUANCE", code),
            PostingLine(ids[("issuer", code, code)], code, body.issue_size, "ISSUANCE", code),
        ],
    )
    command = BookCommand(
        command="list",
        instrument=code,
        tick_fen=columns["tick_fen"],
        lot=columns["lot_size"],
        min_qty=columns["min_order_qty"],
        band_low_fen=columns["band_low_fen"],
        band_high_fen=columns["band_high_fen"],
        reference_price_fen=columns["reference_price_fen"],
        business_date=business_date.isoformat(),
        state="trading",
    )
    await messages.to_shard(session, command, settings.matching_shards)
    await messages.instrument_updated(session, [code])
    row = await repository.get_product(session, code)
    assert row is not None
    return row


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def get_instrument(session: AsyncSession, code: str) -> Row[Any]:
    row = await repository.get_product(session, code)
    if row is None:
        raise ProblemError(404, "UNKNOWN_INSTRUMENT", f"no instrument {code}")
    return row


async def allocate(session: AsyncSession, code: str, body: AllocationRequest) -> dict[str, Any]:
    """Primary registration (份额登记): move units from the issuer's account to members."""
    product = await repository.get_product(session, code, for_update=True)
    if product is None:
        raise ProblemError(404, "UNKNOWN_INSTRUMENT", f"no instrument {code}")
    if product.state == "delisted":
        raise ProblemError(409, "INSTRUMENT_NOT_TRADING", f"{code} is delisted")
    totals: dict[str, int] = {}
    for item in body.allocations:
        if item.quantity <= 0 or item.quantity > MAX_UNITS:
            raise ProblemError(422, "INVALID_QUANTITY", "allocation quantities must be positive")
        totals[item.member_id] = totals.get(item.member_id, 0) + item.quantity
    for member_id in sorted(totals):
        if await repository.get_member(session, member_id) is None:
            raise unknown_member(member_id)
    issuer = await ledger.account_id(session, ("issuer", code, code))
    ids = await ledger.ensure_accounts(session, [("member", m, code) for m in totals])
    total = sum(totals.values())
    await ledger.lock_accounts(session, [issuer, *ids.values()])
    issuer_settled = (
        await session.execute(
            text("SELECT settled FROM custody.accounts WHERE id = :id"), {"id": issuer}
        )
    ).scalar_one()
    if total > issuer_settled:
        raise ProblemError(
            422,
            "ALLOCATION_EXCEEDS_ISSUE",
            f"allocating {total} units but only {issuer_settled} of the issue are unallocated",
        )
    existing = {r.member_id for r in await repository.holders(session, code)}
    new_holders = len(existing | set(totals))
    if new_holders > product.max_holders:
        raise ProblemError(
            422,
            "HOLDER_LIMIT_REACHED",
            f"{code} would have {new_holders} holders; the cap is {product.max_holders}",
        )
    allocation_id = new_id("al")
    business_date = await ledger.current_business_date(session)
    postings = [PostingLine(issuer, code, -total, "ALLOCATION", allocation_id)]
    postings += [
        PostingLine(ids[("member", m, code)], code, q, "ALLOCATION", allocation_id)
        for m, q in sorted(totals.items())
    ]
    await ledger.post(
        session,
        kind="ALLOCATION",
        reference=allocation_id,
        business_date=business_date,
        postings=postings,
    )
    changed = await ledger.refresh_holder_counts(session, [code])
    if changed:
        await messages.instrument_updated(session, changed)
    product = await repository.get_product(session, code)
    assert product is not None
    return {
        "allocation_id": allocation_id,
        "instrument": code,
        "allocations": [{"member_id": m, "quantity": q} for m, q in sorted(totals.items())],
        "holder_count": product.holder_count,
    }


_SET_STATE = Statement(
    """
    UPDATE custody.products SET state = :s, updated_at = now()
    WHERE code = :c AND state <> 'delisted' AND state <> :s
    RETURNING code
    """
)


async def set_state(session: Tx, code: str, state: str) -> bool:
    """Change a product's state; a delisting is final. True when it changed."""
    return bool(await _SET_STATE.fetch(session, c=code, s=state))
