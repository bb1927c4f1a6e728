"""Readiness: is every part this process depends on able to serve?

Liveness (`/healthz`) only says the process answers: restarting a process
because its database is down would not bring the database back. Readiness
(`/readyz`) asks each registered check (engine loaded, database, RabbitMQ and
Redis answering, a model advertised) so a load balancer sends traffic only to
replicas that can serve it. The checks run concurrently, each within
`timeout_s`, so a hung dependency makes readiness false instead of hanging the
probe. A draining process is not ready whatever its checks say
(`connection/http/health.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ziggurat.telemetry import get_logger

log = get_logger(__name__)

Check = Callable[[], Awaitable[bool]]


class HealthService:
    """Named readiness checks, each with a timeout so one stuck part cannot hang the probe."""

    def __init__(self, *, timeout_s: float = 2.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout_s = timeout_s

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def readiness(self) -> dict[str, bool]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _run(self, name: str) -> bool:
        try:
            return await asyncio.wait_for(self._checks[name](), timeout=self._timeout_s)
        except TimeoutError:
            log.warning("readiness_check_timeout", check=name)
            return False
        except Exception as exc:  # whatever a client library raises, the answer is "not ready", not a 500
            log.warning("readiness_check_failed", check=name, error_type=type(exc).__name__)
            return False
