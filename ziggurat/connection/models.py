"""Which models are served right now, as the gateways see them.

In one process the engine is right here. Split into roles, each worker
advertises its models in Redis under a key that expires unless the worker
renews it, and gateways read the union every few seconds: a model appears
when its first worker starts and disappears shortly after its last one stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

import orjson
import redis.asyncio as redis

from ziggurat.model.engine import ModelInfo
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


class ModelDirectory(Protocol):
    def models(self) -> list[ModelInfo]:
        """The models served now (a recent reading for shared directories)."""
        ...


class StaticModels:
    def __init__(self, models: Sequence[ModelInfo]) -> None:
        self._models = list(models)

    def models(self) -> list[ModelInfo]:
        return list(self._models)


class RedisModels:
    """Workers `advertise`; gateways `refresh` (or run `watch`) and read `models()`."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._client = client
        self._pattern = f"{prefix}:model:*"
        self._prefix = f"{prefix}:model:"
        self._models: list[ModelInfo] = []

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    async def advertise(self, worker_id: str, models: Sequence[ModelInfo], ttl_s: float) -> None:
        body = orjson.dumps([asdict(model) for model in models])
        await self._client.set(self._prefix + worker_id, body, px=int(ttl_s * 1000))

    async def withdraw(self, worker_id: str) -> None:
        await self._client.delete(self._prefix + worker_id)

    async def refresh(self) -> None:
        keys = [key async for key in self._client.scan_iter(match=self._pattern, count=500)]
        bodies = await self._client.mget(keys) if keys else []
        found: dict[str, ModelInfo] = {}
        for body in bodies:
            if body is None:
                continue
            for fields in orjson.loads(body):
                info = ModelInfo(**fields)
                found.setdefault(info.name, info)
        self._models = sorted(found.values(), key=lambda model: model.name)

    async def watch(self, interval_s: float) -> None:
        """Refresh forever (a gateway's background task); Redis hiccups keep the last reading."""
        while True:
            try:
                await self.refresh()
            except (redis.RedisError, OSError) as exc:
                log.warning("model_directory_refresh_failed", error_type=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def keep_advertising(self, worker_id: str, models: Sequence[ModelInfo], ttl_s: float) -> None:
        """Renew a worker's advertisement forever (a worker's background task)."""
        try:
            while True:
                try:
                    await self.advertise(worker_id, models, ttl_s)
                except (redis.RedisError, OSError) as exc:
                    log.warning("model_advertise_failed", error_type=type(exc).__name__)
                await asyncio.sleep(ttl_s / 3)
        finally:
            try:
                await self.withdraw(worker_id)
            except (redis.RedisError, OSError):
                pass
