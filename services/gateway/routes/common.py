"""What every router shares: the gateway, the callers, paging and JSON answers."""

import hashlib
import json
from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Query, Request, Response

from services.gateway.auth import PartnerPrincipal, StaffPrincipal, require_partner, require_staff
from services.gateway.context import Gateway, gateway_dependency
from services.gateway.schemas import Problem

Gw = Annotated[Gateway, Depends(gateway_dependency)]
Partner = Annotated[PartnerPrincipal, Depends(require_partner)]
Admin = Annotated[StaffPrincipal, Depends(require_staff())]
Operator = Annotated[StaffPrincipal, Depends(require_staff("operator"))]
StaffReader = Annotated[StaffPrincipal, Depends(require_staff("operator", "auditor"))]

Limit = Annotated[int, Query(ge=1, le=1000, description="page size (default 100, max 1000)")]
Cursor = Annotated[str | None, Query(max_length=512, description="opaque cursor from next_cursor")]

ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
CODE_PATH = Annotated[str, Path(pattern=r"^[A-Z0-9]{4,16}$", examples=["ZJ2026A01"])]
MemberId = Annotated[str, Path(pattern=ID_PATTERN, examples=["m_01JDZ3Q4W5X6Y7Z8A9B0C1D2E3"])]
OrderId = Annotated[str, Path(pattern=ID_PATTERN)]
DatePath = Annotated[str, Path(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-11-20"])]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}}
    for status in (401, 403, 404, 409, 422, 429, 503)
}


def json_response(data: Any, status: int = 200) -> Response:
    try:
        content = orjson.dumps(data)
    except TypeError:  # integers beyond 64 bits (an audited request body may hold them)
        content = json.dumps(data, ensure_ascii=False).encode()
    return Response(content, status_code=status, media_type="application/json")


def downstream_key(request: Request) -> str | None:
    """The Idempotency-Key passed to a downstream service, derived from the caller's."""
    key = request.scope.get("gateway.idempotency_key")
    if not isinstance(key, str):
        return None
    return "gw-" + hashlib.sha256(key.encode()).hexdigest()
