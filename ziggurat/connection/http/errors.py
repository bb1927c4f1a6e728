"""The single place that maps `ZigguratError`s to HTTP statuses and OpenAI-shaped bodies.

Every error the API returns has the body `{"error": {"message", "type", "param",
"code"}}`, request-validation failures included. Unexpected exceptions are logged
with their trace and become a generic 500; the trace never reaches the client.
Each error response counts in `ziggurat_errors_total{type}` (its OpenAI type);
an error sent inside a stream that has started counts as a failed generation
(`ziggurat_requests_total{status="error"}`) instead.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ziggurat import errors
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[errors.ZigguratError], int], ...] = (
    (errors.PayloadTooLarge, 413),
    (errors.ModelNotFound, 404),
    (errors.InvalidRequest, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.RateLimited, 429),
    (errors.Overloaded, 503),
    (errors.UpstreamFailed, 502),
)

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def status_for(error: errors.ZigguratError) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def body_for(error: errors.ZigguratError) -> dict[str, Any]:
    return error_body(error.message, error.kind, param=error.param, code=error.code)


def error_response(error: errors.ZigguratError) -> Response:
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, errors.RateLimited):
        headers.update(error.headers)
    if isinstance(error, errors.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return json_error(status_for(error), body_for(error), headers=headers)


def json_error(status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = exc.errors()
    if not problems:
        return "Invalid request.", None
    first = problems[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    message = str(first.get("msg", "Invalid value"))
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    if param:
        message = f"{param}: {message}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return message, param


def install_error_handlers(app: FastAPI, *, metrics: Metrics | None = None) -> None:
    def count(kind: str) -> None:
        if metrics is not None:
            metrics.errors.labels(kind).inc()

    async def on_ziggurat_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.ZigguratError)
        count(exc.kind)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = _describe_validation(exc)
        count("invalid_request_error")
        return json_error(
            400, error_body(message, "invalid_request_error", param=param, code="invalid_request")
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _STATUS_TYPES.get(
            exc.status_code, "server_error" if exc.status_code >= 500 else "invalid_request_error"
        )
        count(kind)
        headers = dict(exc.headers) if exc.headers else None
        return json_error(exc.status_code, error_body(str(exc.detail), kind), headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        count("server_error")
        return json_error(
            500, error_body("The server had an error while processing your request.", "server_error")
        )

    app.add_exception_handler(errors.ZigguratError, on_ziggurat_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
