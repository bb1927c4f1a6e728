"""ASGI middleware for every request: request id, size limit, metrics and access log.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) so streamed responses
pass through untouched and the per-request cost stays a few microseconds.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ziggurat.connection.http.errors import body_for, json_error
from ziggurat.errors import PayloadTooLarge
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger, request_id_var

log = get_logger("ziggurat.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Tags each request with an id, enforces the body limit, records metrics and logs it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_request_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        token = request_id_var.set(request_id)
        started = time.monotonic()
        status = 500
        response_started = False
        declared = self._declared_length(scope)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    raise _BodyTooLarge
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if declared is not None and declared > self.max_request_bytes:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, tagged_send)
        except _BodyTooLarge:
            if response_started:
                raise
            too_large = PayloadTooLarge(f"The request body exceeds {self.max_request_bytes} bytes.")
            await json_error(413, body_for(too_large), headers={"x-request-id": request_id})(
                scope, receive, send
            )
            status = 413
        finally:
            self._record(scope, status, time.monotonic() - started)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, elapsed_s: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
        self.metrics.http_duration.labels(template).observe(elapsed_s)
        log.info(
            "request",
            method=scope["method"],
            route=template,
            status=status,
            duration_ms=round(elapsed_s * 1000, 2),
        )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SAFE_REQUEST_ID.match(candidate):
                    return candidate
        return uuid.uuid4().hex

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None
