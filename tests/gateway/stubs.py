"""Small real HTTP stand-ins for custody, matching and clearing, serving the internal
routes the gateway calls with the public API's shapes. In-memory; good enough to test
the gateway's proxy layer, tenancy and reference-data handling end to end over HTTP."""

import itertools
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from shared.errors import ProblemError, install_problem_handlers
from shared.ids import new_id

_sub = itertools.count(1)


@dataclass
class CustodyState:
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    instruments: dict[str, dict[str, Any]] = field(default_factory=dict)
    withdrawals: dict[str, dict[str, Any]] = field(default_factory=dict)
    deposits: dict[str, dict[str, Any]] = field(default_factory=dict)
    allocations: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    #: When set, every custody route answers with this status (to simulate failures).
    fail_with: int | None = None


def custody_app(state: CustodyState) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    r = APIRouter(prefix="/internal")

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        body = await request.body()
        state.calls.append((request.method, request.url.path, dict(request.query_params), body))
        if state.fail_with is not None:
            return Response(status_code=state.fail_with)
        response: Response = await call_next(request)
        return response

    def member_of(member_id: str, partner_id: str | None) -> dict[str, Any]:
        member = state.members.get(member_id)
        if member is None or (partner_id is not None and state.owners[member_id] != partner_id):
            raise ProblemError(404, "UNKNOWN_MEMBER", f"no member {member_id}")
        return member

    @r.post("/members", status_code=201)
    async def create_member(body: dict[str, Any]) -> dict[str, Any]:
        partner_id = body.pop("partner_id")
        for mid, member in state.members.items():
            if state.owners[mid] == partner_id and member["external_ref"] == body["external_ref"]:
                raise ProblemError(409, "MEMBER_EXISTS", "external_ref already onboarded")
        member_id = new_id("m")
        member = {
            "member_id": member_id,
            "sub_account": f"SUB{next(_sub):07d}",
            **body,
            "created_at": "2026-11-20T00:00:00Z",
        }
        state.members[member_id] = member
        state.owners[member_id] = partner_id
        return member

    @r.get("/members/{member_id}")
    async def get_member(member_id: str, partner_id: str | None = None) -> dict[str, Any]:
        return member_of(member_id, partner_id)

    @r.get("/members/{member_id}/balances")
    async def balances(member_id: str, partner_id: str | None = None) -> dict[str, Any]:
        member_of(member_id, partner_id)
        zero = {"settled": "0.00", "held": "0.00", "pending_in": "0.00", "pending_out": "0.00"}
        return {"member_id": member_id, "cash": {**zero, "available": "0.00"}, "holdings": []}

    @r.get("/members/{member_id}/ledger")
    async def ledger(
        member_id: str, partner_id: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        member_of(member_id, partner_id)
        return {"items": [], "next_cursor": None}

    @r.post("/members/{member_id}/withdrawals", status_code=202)
    async def withdraw(
        member_id: str, body: dict[str, Any], partner_id: str | None = None
    ) -> dict[str, Any]:
        member_of(member_id, partner_id)
        if body["amount"] == "999999.00":
            raise ProblemError(422, "INSUFFICIENT_FUNDS", "more than available")
        withdrawal = {
            "withdrawal_id": new_id("w"),
            "member_id": member_id,
            "amount": body["amount"],
            "status": "pending",
            "business_date": "2026-11-20",
            "created_at": "2026-11-20T00:00:00Z",
        }
        state.withdrawals[withdrawal["withdrawal_id"]] = withdrawal
        return withdrawal

    @r.get("/members/{member_id}/withdrawals")
    async def withdrawals(member_id: str, partner_id: str | None = None) -> dict[str, Any]:
        member_of(member_id, partner_id)
        items = [w for w in state.withdrawals.values() if w["member_id"] == member_id]
        return {"items": items, "next_cursor": None}

    @r.post("/deposits", status_code=201)
    async def deposit(body: dict[str, Any]) -> dict[str, Any]:
        if body["member_id"] not in state.members:
            raise ProblemError(404, "UNKNOWN_MEMBER", "no such member")
        return state.deposits.setdefault(
            body["bank_reference"], {**body, "deposit_id": new_id("d")}
        )

    @r.post("/instruments", status_code=201)
    async def create_instrument(body: dict[str, Any]) -> dict[str, Any]:
        if body["code"] in state.instruments:
            raise ProblemError(409, "INSTRUMENT_EXISTS", "code taken")
        instrument = {**body, "state": "trading", "holder_count": 0}
        state.instruments[body["code"]] = instrument
        return instrument

    @r.get("/instruments")
    async def list_instruments(limit: int = 100) -> dict[str, Any]:
        return {"items": list(state.instruments.values())[:limit], "next_cursor": None}

    @r.get("/instruments/{code}")
    async def get_instrument(code: str) -> dict[str, Any]:
        if code not in state.instruments:
            raise ProblemError(404, "UNKNOWN_INSTRUMENT", f"no product {code}")
        return state.instruments[code]

    @r.post("/instruments/{code}/allocations", status_code=201)
    async def allocate(code: str, body: dict[str, Any]) -> dict[str, Any]:
        await get_instrument(code)
        state.allocations.append({"instrument": code, **body})
        return {"instrument": code, "allocations": body["allocations"]}

    @r.get("/accounts")
    async def accounts(asset: str = "CNY") -> dict[str, Any]:
        items = [
            {
                "member_id": mid,
                "sub_account": m["sub_account"],
                "settled": "0.00",
                "held": "0.00",
                "available": "0.00",
            }
            for mid, m in state.members.items()
        ]
        return {"items": items, "next_cursor": None}

    app.include_router(r)
    return app


def matching_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/internal/books/{code}/depth")
    async def depth(code: str, levels: int = 10) -> dict[str, Any]:
        return {
            "instrument": code,
            "sequence": 7,
            "bids": [["100.00", 5]],
            "asks": [["101.00", 3]][:levels],
        }

    @app.get("/internal/books/{code}/trades")
    async def trades(code: str, limit: int = 50) -> dict[str, Any]:
        return {
            "items": [
                {
                    "price": "100.00",
                    "quantity": 1,
                    "executed_at": "2026-11-20T00:00:00Z",
                    "sequence": 3,
                }
            ][:limit]
        }

    @app.get("/internal/books/{code}/ticker")
    async def ticker(code: str) -> dict[str, Any]:
        return {
            "instrument": code,
            "last": None,
            "open": None,
            "high": None,
            "low": None,
            "volume": 0,
            "turnover": "0.00",
            "reference_price": "100.00",
            "best_bid": None,
            "best_ask": None,
        }

    return app


@dataclass
class ClearingState:
    business_date: str = "2026-11-20"
    settled: set[str] = field(default_factory=set)
    statements: dict[str, bytes] = field(default_factory=dict)
    statement_queries: list[dict[str, str]] = field(default_factory=list)


def clearing_app(state: ClearingState) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/internal/business-date")
    async def business_date() -> dict[str, Any]:
        return {"business_date": state.business_date, "status": "open"}

    @app.post("/internal/eod", status_code=202)
    async def eod(body: dict[str, Any]) -> dict[str, Any]:
        return {"business_date": body["business_date"], "status": "running", "phase": "rolling"}

    @app.get("/internal/eod/{day}")
    async def eod_status(day: str) -> dict[str, Any]:
        if day not in state.settled:
            raise ProblemError(404, "EOD_NOT_FOUND", f"no run for {day}")
        return {
            "business_date": day,
            "status": "settled",
            "phase": "done",
            "progress": {"done": 1, "total": 1},
        }

    @app.get("/internal/members/{member_id}/settlements")
    async def member_settlements(member_id: str, request: Request) -> dict[str, Any]:
        state.statement_queries.append({"member_id": member_id, **request.query_params})
        return {"items": [], "next_cursor": None}

    @app.get("/internal/settlements/{day}/instructions")
    async def instructions(day: str) -> Response:
        return Response("business_date,seq\n#TOTAL,0,0.00,0.00\n", media_type="text/csv")

    @app.post("/internal/reconciliations/{day}", status_code=201)
    async def reconcile(day: str, request: Request) -> dict[str, Any]:
        state.statements[day] = await request.body()
        return {"business_date": day, "status": "balanced"}

    return app
