"""RFC 9457 problem documents with stable machine-readable codes."""

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ProblemError(Exception):
    """An error that becomes a problem document: a status, a stable code and a detail."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.headers = headers or {}
        self.extra = extra or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://errors.exchange.local/{self.code.lower().replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


def overloaded() -> ProblemError:
    """Every database connection of this process is busy: overload, not a fault; the
    request changed nothing and may be retried."""
    return ProblemError(
        503,
        "SERVICE_UNAVAILABLE",
        "the service is overloaded; retry shortly",
        headers={"Retry-After": "1"},
    )


def problem_response(error: ProblemError) -> Response:
    return Response(
        content=orjson.dumps(error.to_dict()),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "AUTH_MISSING",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_FAILED",
    429: "RATE_LIMITED",
}


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error the app can raise a problem document; never a bare 500 body."""

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return problem_response(
            ProblemError(422, "VALIDATION_FAILED", detail, extra={"errors": errors})
        )

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return problem_response(
            ProblemError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
        )

    async def on_pool_timeout(_: Request, exc: Exception) -> Response:
        return problem_response(overloaded())

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(PoolTimeoutError, on_pool_timeout)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
