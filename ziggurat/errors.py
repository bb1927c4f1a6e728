"""Errors a client may see, by meaning only.

Nothing here knows HTTP: `connection/http/errors.py` is the single place that maps
these to status codes and OpenAI-shaped bodies. Every message must be safe to show
to the caller (no secrets, no internals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ZigguratError(Exception):
    """An error the client may see. The message must be safe to show."""

    kind: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code  # type: ignore[misc]


class InvalidRequest(ZigguratError):
    kind = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class Unauthenticated(ZigguratError):
    kind = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ZigguratError):
    kind = "permission_error"


class NotFound(ZigguratError):
    kind = "not_found_error"


class ModelNotFound(NotFound):
    kind = "invalid_request_error"
    code = "model_not_found"


class Conflict(ZigguratError):
    kind = "conflict_error"


class RateLimited(ZigguratError):
    """Too many requests for this principal; retry after `retry_after_s`.

    `headers`: the limit's state as the `x-ratelimit-*` headers OpenAI clients
    read (made by the service layer, sent as they are with the 429).
    """

    kind = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = dict(headers or {})


class Overloaded(ZigguratError):
    """The platform is at capacity; retry after `retry_after_s`."""

    kind = "overloaded_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s


class ShuttingDown(Overloaded):
    """This server is draining before it stops; the retry goes to another replica."""

    code = "shutting_down"


class UpstreamFailed(ZigguratError):
    """An engine (local or remote) failed while serving the request."""

    kind = "upstream_error"
    code = "upstream_failed"


class ConfigurationError(Exception):
    """Settings or a model reference cannot work; raised at start-up, shown to the operator."""
