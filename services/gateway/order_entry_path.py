"""Order entry without FastAPI's routing, dependency injection and exception layers.

``POST /v1/orders`` and ``POST /v1/orders/batch`` from a partner are the gateway's hottest
requests, and those layers were about a third of a single order's CPU in the gateway. The
edge (``GatewayMiddleware``) has already authenticated, rate-limited and taken any
Idempotency-Key when it hands a request here; this runs the same order service as the
routes in ``routes/orders.py`` (which still define the contract and the OpenAPI document)
and answers the same documents. A body that does not parse and validate here goes the
normal way, so every validation error keeps FastAPI's problem document.
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.auth import PRINCIPAL_KEY, PartnerPrincipal
from services.gateway.routes.orders import batch_answer, order_answer
from services.gateway.schemas import OrderBatch, OrderCreate
from shared.app import CorrelationMiddleware
from shared.errors import ProblemError, overloaded, problem_response

if TYPE_CHECKING:
    from services.gateway.context import Gateway

_JSON = ("application/json", "application/json; charset=utf-8")


class OrderEntryPath:
    def __init__(self, gateway: "Gateway", fallback: ASGIApp) -> None:
        self._gateway = gateway
        self._fallback = fallback
        #: Per path: the body's model and the answer (the routes' own answer functions).
        self._endpoints: dict[
            str, tuple[type[BaseModel], Callable[[Gateway, str, Any], Awaitable[Response]]]
        ] = {
            "/v1/orders": (OrderCreate, order_answer),
            "/v1/orders/batch": (OrderBatch, batch_answer),
        }
        # The same correlation id, response header and request metrics as every route.
        self._with_correlation = CorrelationMiddleware(self._answer, service="gateway")

    def takes(self, scope: Scope, headers: dict[str, str]) -> bool:
        return (
            scope["method"] == "POST"
            and scope["path"] in self._endpoints
            and not scope.get("query_string")
            and isinstance(scope.get(PRINCIPAL_KEY), PartnerPrincipal)
            and headers.get("content-type", "").lower() in _JSON
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        model, _ = self._endpoints[scope["path"]]
        try:
            parsed = model.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            await self._fallback(scope, receive, send)
            return
        scope["gateway.parsed_body"] = parsed
        await self._with_correlation(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope[PRINCIPAL_KEY]
        assert isinstance(principal, PartnerPrincipal)
        try:
            _, answer = self._endpoints[scope["path"]]
            response = await answer(
                self._gateway, principal.partner_id, scope["gateway.parsed_body"]
            )
        except ProblemError as problem:
            response = problem_response(problem)
        except PoolTimeoutError:
            response = problem_response(overloaded())
        await response(scope, receive, send)
