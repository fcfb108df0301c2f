"""Market data (partner): depth, recent trades and ticker from matching, and the WebSocket."""

import asyncio
import contextlib
import logging
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response, WebSocket, WebSocketDisconnect

from services.gateway.auth import PartnerPrincipal
from services.gateway.context import get_gateway
from services.gateway.middleware import header_map, path_with_query
from services.gateway.routes.common import CODE_PATH, PROBLEMS, Gw, Partner
from services.gateway.schemas import Depth, MarketTrades, Ticker
from services.gateway.ws import Subscriber, channels_of
from shared.errors import ProblemError

log = logging.getLogger(__name__)

router = APIRouter(tags=["market data"], responses=PROBLEMS)


@router.get("/v1/market/{code}/depth", response_model=Depth)
async def depth(
    code: CODE_PATH, gw: Gw, partner: Partner, levels: Annotated[int, Query(ge=1, le=100)] = 10
) -> Response:
    """Aggregated price levels, best first, and the book sequence the snapshot reflects."""
    return await gw.downstream.matching.proxy(
        "GET", f"/internal/books/{code}/depth", params={"levels": levels}
    )


@router.get("/v1/market/{code}/trades", response_model=MarketTrades)
async def trades(
    code: CODE_PATH, gw: Gw, partner: Partner, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> Response:
    """Recent trades, newest first."""
    return await gw.downstream.matching.proxy(
        "GET", f"/internal/books/{code}/trades", params={"limit": limit}
    )


@router.get("/v1/market/{code}/ticker", response_model=Ticker)
async def ticker(code: CODE_PATH, gw: Gw, partner: Partner) -> Response:
    """Last, open, high, low, volume, turnover, reference price, best bid and ask of the day."""
    return await gw.downstream.matching.proxy("GET", f"/internal/books/{code}/ticker")


@router.websocket("/v1/ws")
async def stream(websocket: WebSocket) -> None:
    """Sign the handshake like any request (GET /v1/ws, empty body), then send
    ``{"op": "subscribe", "channels": ["depth:CODE", "trades:CODE", "orders"]}``.
    Messages are ``{"channel", "data"}``; ``orders`` carries the partner's own orders."""
    gw = get_gateway(websocket)  # type: ignore[arg-type]
    scope = websocket.scope
    try:
        principal = await gw.auth.authenticate(
            "GET", path_with_query(scope), header_map(scope), b""
        )
    except ProblemError:
        await websocket.close(code=1008)
        return
    if not isinstance(principal, PartnerPrincipal):
        await websocket.close(code=1008)
        return
    await websocket.accept()
    subscriber = Subscriber(websocket, principal.partner_id)
    gw.hub.add(subscriber)

    async def writer() -> None:
        while True:
            message = await subscriber.queue.get()
            await websocket.send_text(message.decode())

    sender = asyncio.create_task(writer())
    try:
        while True:
            raw = await websocket.receive_text()
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                await websocket.send_text('{"type":"error","detail":"not JSON"}')
                continue
            if not isinstance(request, dict):
                continue
            op = request.get("op")
            channels = channels_of(request.get("channels"))
            if op == "subscribe":
                subscriber.channels |= channels
                await subscriber.queue.put(
                    orjson.dumps({"type": "subscribed", "channels": sorted(subscriber.channels)})
                )
                for channel in sorted(channels):
                    if channel.startswith("depth:"):
                        with contextlib.suppress(ProblemError):
                            snapshot = await gw.downstream.matching.json(
                                "GET", f"/internal/books/{channel[6:]}/depth", params={"levels": 10}
                            )
                            await subscriber.queue.put(
                                orjson.dumps({"channel": channel, "data": snapshot})
                            )
            elif op == "unsubscribe":
                subscriber.channels -= channels
                await subscriber.queue.put(
                    orjson.dumps({"type": "unsubscribed", "channels": sorted(subscriber.channels)})
                )
            elif op == "ping":
                await subscriber.queue.put(b'{"type":"pong"}')
    except WebSocketDisconnect:
        pass
    finally:
        gw.hub.remove(subscriber)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
