"""Operational routes: liveness, readiness, Prometheus metrics. No auth: keep them off the public ingress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from ziggurat import __version__
from ziggurat.connection.http.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", response_model=None)
async def readyz(services: ServicesDep) -> Response:
    if services.draining.is_draining:  # at once, without asking anything: take this replica out now
        return JSONResponse({"status": "draining"}, status_code=503)
    checks = await services.health.readiness()
    is_ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if is_ready else "not_ready", "checks": checks},
        status_code=200 if is_ready else 503,
    )


@router.get("/metrics", response_model=None)
async def metrics(services: ServicesDep) -> Response:
    # Readiness is checked at scrape time, so alerts see the broker, Redis and the database as this
    # process does (`ziggurat_readiness{check}`), even where nothing probes /readyz.
    services.metrics.record_readiness(await services.health.readiness())
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
