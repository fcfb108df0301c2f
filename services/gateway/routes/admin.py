"""Admin: partners, staff tokens, the audit trail, and instrument listing and control."""

import asyncio
import secrets
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.gateway import repositories as repo
from services.gateway.context import Gateway
from services.gateway.routes.common import (
    CODE_PATH,
    PROBLEMS,
    Admin,
    Cursor,
    Gw,
    Limit,
    StaffReader,
    downstream_key,
    json_response,
)
from services.gateway.schemas import (
    AllocationsCreate,
    AuditPage,
    Instrument,
    InstrumentCreate,
    PartnerCreate,
    PartnerCreated,
    StaffTokenCreate,
    StaffTokenCreated,
)
from services.gateway.secrets_box import hash_token
from shared.clock import rfc3339
from shared.contracts import INSTRUMENT_CONTROL, InstrumentControl
from shared.errors import ProblemError
from shared.ids import new_id
from shared.messaging.outbox import Draft

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEMS)


@router.post("/partners", status_code=201, response_model=PartnerCreated)
async def create_partner(body: PartnerCreate, gw: Gw, staff: Admin) -> Response:
    """Create a partner platform and its API credentials; the secret is shown once."""
    partner_id = new_id("p")
    api_key = "pk_" + secrets.token_hex(16)
    api_secret = "sk_" + secrets.token_urlsafe(32)
    async with gw.sessions()() as session, session.begin():
        await repo.insert_partner(
            session,
            partner_id=partner_id,
            name=body.name,
            api_key=api_key,
            secret_ciphertext=gw.auth.box.encrypt(api_secret, bound_to=api_key),
            rate_per_second=body.rate_limit_per_second,
            rate_burst=body.rate_limit_burst,
        )
    return json_response(
        {
            "partner_id": partner_id,
            "name": body.name,
            "api_key": api_key,
            "api_secret": api_secret,
            "rate_limit_per_second": body.rate_limit_per_second
            or gw.settings.rate_limit_per_second,
            "rate_limit_burst": body.rate_limit_burst or gw.settings.rate_limit_burst,
        },
        201,
    )


@router.post("/staff-tokens", status_code=201, response_model=StaffTokenCreated)
async def create_staff_token(body: StaffTokenCreate, gw: Gw, staff: Admin) -> Response:
    """Create a staff bearer token with one role; the token is shown once (stored hashed)."""
    token_id = new_id("st")
    token = "st_" + secrets.token_urlsafe(32)
    async with gw.sessions()() as session, session.begin():
        await repo.insert_staff_token(
            session,
            token_id=token_id,
            name=body.name,
            role=body.role,
            token_hash=hash_token(token),
            created_by=staff.token_id,
        )
    return json_response(
        {"token": token, "role": body.role, "token_id": token_id, "name": body.name}, 201
    )


@router.get("/audit", response_model=AuditPage)
async def audit_trail(
    gw: Gw,
    staff: StaffReader,
    since: Annotated[datetime | None, Query(description="RFC 3339; entries at or after it")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """The audit trail of staff actions (every staff request that changes something), oldest first."""
    if since is not None and since.tzinfo is None:
        raise ProblemError(422, "VALIDATION_FAILED", "since must carry a time zone")
    after_id = repo.decode_int_cursor(cursor)
    async with gw.sessions()() as session:
        rows = await repo.list_audit(session, since=since, after_id=after_id, limit=limit + 1)
    items = [
        {
            "id": r.id,
            "occurred_at": rfc3339(r.occurred_at),
            "actor": r.actor,
            "actor_name": r.actor_name,
            "role": r.role,
            "method": r.method,
            "path": r.path,
            "status": r.status,
            "request": r.request,
            "correlation_id": r.correlation_id,
        }
        for r in rows[:limit]
    ]
    next_cursor = repo.encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return json_response({"items": items, "next_cursor": next_cursor})


@router.post("/instruments", status_code=201, response_model=Instrument)
async def create_instrument(
    body: InstrumentCreate, request: Request, gw: Gw, staff: Admin
) -> Response:
    """Register (登记) a product; the whole issue starts in the issuer's account."""
    data = await gw.downstream.custody.json(
        "POST",
        "/internal/instruments",
        json=body.model_dump(mode="json"),
        idempotency_key=downstream_key(request),
    )
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        async with gw.sessions()() as session, session.begin():
            await repo.upsert_instrument(session, data)
        gw.refdata.forget_instrument(data["code"])
    return json_response(data, 201)


@router.post("/instruments/{code}/allocations", status_code=201)
async def allocate(
    code: CODE_PATH, body: AllocationsCreate, request: Request, gw: Gw, staff: Admin
) -> Response:
    """Primary registration of holdings: move units from the issuer to members."""
    return await gw.downstream.custody.proxy(
        "POST",
        f"/internal/instruments/{code}/allocations",
        json=body.model_dump(mode="json"),
        idempotency_key=downstream_key(request),
    )


_TARGET = {"halt": "halted", "resume": "trading", "delist": "delisted"}


async def _control(gw: Gateway, code: str, action: str) -> Response:
    current = await gw.downstream.custody.json("GET", f"/internal/instruments/{code}")
    if not isinstance(current, dict):
        raise ProblemError(503, "SERVICE_UNAVAILABLE", "custody answered with no instrument")
    target = _TARGET[action]
    if current.get("state") == "delisted" and action != "delist":
        raise ProblemError(409, "INSTRUMENT_DELISTED", f"{code} is delisted; delisting is final")
    if current.get("state") != target:
        control: InstrumentControl = {"instrument": code, "action": action}  # type: ignore[typeddict-item]
        async with gw.sessions()() as session, session.begin():
            await gw.runtime.outbox.add(
                session,
                [Draft(INSTRUMENT_CONTROL, INSTRUMENT_CONTROL, dict(control))],
                stream=f"gateway:control:{code}",
            )
        deadline = time.monotonic() + gw.settings.control_wait_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await gw.downstream.custody.json("GET", f"/internal/instruments/{code}")
            if isinstance(current, dict) and current.get("state") == target:
                break
    # The control message is durably queued and takes effect in sequence with the orders;
    # this gateway stops accepting orders at once (a resume waits for custody's word).
    instrument = {**current, "state": target}
    if target != "trading" or current.get("state") == target:
        async with gw.sessions()() as session, session.begin():
            await repo.upsert_instrument(session, instrument)
        gw.refdata.forget_instrument(code)
    return json_response(instrument)


@router.post("/instruments/{code}/halt", response_model=Instrument)
async def halt(code: CODE_PATH, gw: Gw, staff: Admin) -> Response:
    """Halt trading (停牌): new orders are rejected, resting orders stay and may be cancelled."""
    return await _control(gw, code, "halt")


@router.post("/instruments/{code}/resume", response_model=Instrument)
async def resume(code: CODE_PATH, gw: Gw, staff: Admin) -> Response:
    """Resume trading after a halt."""
    return await _control(gw, code, "resume")


@router.post("/instruments/{code}/delist", response_model=Instrument)
async def delist(code: CODE_PATH, gw: Gw, staff: Admin) -> Response:
    """Delist (摘牌): final; resting orders are cancelled with reason DELISTED."""
    return await _control(gw, code, "delist")
