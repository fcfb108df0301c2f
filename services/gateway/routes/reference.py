"""Reference data for partners and staff: the products and their trading parameters."""

from fastapi import APIRouter, Depends, Response

from services.gateway.auth import require_any
from services.gateway.routes.common import CODE_PATH, PROBLEMS, Cursor, Gw, Limit
from services.gateway.schemas import Instrument, InstrumentPage

router = APIRouter(
    prefix="/v1/instruments",
    tags=["reference data"],
    responses=PROBLEMS,
    dependencies=[Depends(require_any)],
)


@router.get("", response_model=InstrumentPage)
async def list_instruments(gw: Gw, limit: Limit = 100, cursor: Cursor = None) -> Response:
    """Every product with its state and trading parameters."""
    return await gw.downstream.custody.proxy(
        "GET", "/internal/instruments", params={"limit": limit, "cursor": cursor}
    )


@router.get("/{code}", response_model=Instrument)
async def get_instrument(code: CODE_PATH, gw: Gw) -> Response:
    """One product with its disclosure, holder count and reference price."""
    return await gw.downstream.custody.proxy("GET", f"/internal/instruments/{code}")
