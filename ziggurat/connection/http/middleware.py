"""ASGI middleware for every request: request id, security headers, size limit, metrics, access log, span.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) so streamed responses
pass through untouched and the per-request cost stays a few microseconds. With
tracing on, each request is a server span (`POST /v1/chat/completions`) that
continues the caller's W3C `traceparent` when it sends one; the generation's
spans (submit, queue, worker, engine) are its children.
"""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ziggurat.connection.http.errors import body_for, json_error
from ziggurat.connection.http.security_headers import with_security_headers
from ziggurat.errors import PayloadTooLarge
from ziggurat.ids import new_id_hex
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import get_logger, request_id_var, user_id_var
from ziggurat.tracing.base import NO_TRACER, Span, Tracer

log = get_logger("ziggurat.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Tags each request with an id, enforces the body limit, records metrics and logs it."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_request_bytes: int, tracer: Tracer = NO_TRACER
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.tracer.is_enabled:
            await self._serve(scope, receive, send, None)
            return
        method: str = scope["method"]
        parent = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        with self.tracer.span(method, kind="server", parent=parent, attributes=attributes) as span:
            await self._serve(scope, receive, send, span)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
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
                message["headers"] = with_security_headers(
                    [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                )
            await send(message)

        try:
            if declared is not None and declared > self.max_request_bytes:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, tagged_send)
        except _BodyTooLarge:
            if response_started:
                raise
            too_large = PayloadTooLarge(f"The request body exceeds {self.max_request_bytes} bytes.")
            await json_error(413, body_for(too_large))(scope, receive, tagged_send)
            self.metrics.errors.labels(too_large.kind).inc()
            status = 413
        finally:
            template = self._record(scope, status, time.monotonic() - started)
            if span is not None:
                _describe_request(span, scope["method"], template, status, request_id)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, elapsed_s: float) -> str:
        """Count and log the request; returns its route template."""
        route = scope.get("route")
        template: str = getattr(route, "path", None) or "unmatched"
        self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
        self.metrics.http_duration.labels(template).observe(elapsed_s)
        log.info(
            "request",
            method=scope["method"],
            route=template,
            status=status,
            duration_ms=round(elapsed_s * 1000, 2),
        )
        return template

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SAFE_REQUEST_ID.match(candidate):
                    return candidate
        return new_id_hex()

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None


def _describe_request(span: Span, method: str, template: str, status: int, request_id: str) -> None:
    span.update_name(f"{method} {template}")
    span.set_attribute("http.route", template)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("ziggurat.request_id", request_id)
    user_id = user_id_var.get()
    if user_id:
        span.set_attribute("enduser.id", user_id)
    if status >= 500:
        span.set_error(str(status))
