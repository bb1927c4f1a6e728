"""Which models are served right now, as the gateways see them.

In one process the engine is right here. Split into roles, each worker
advertises its models in Redis under a key that expires unless the worker
renews it, and gateways read the union every few seconds: a model appears
when its first worker starts and disappears shortly after its last one stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Protocol

import orjson
import redis.asyncio as redis

from ziggurat.model.adapters import AdapterHost
from ziggurat.model.engine import Engine, ModelInfo, capacity_now
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_CAPACITY = "_capacity"
"""Beside a model's fields in an advertisement: how many generations that worker runs at once."""


class ModelDirectory(Protocol):
    def models(self) -> list[ModelInfo]:
        """The models served now (a recent reading for shared directories)."""
        ...

    def capacity(self, model: str) -> int | None:
        """Generations the workers serving `model` can run at once, all together (None: unknown)."""
        ...


class StaticModels:
    def __init__(self, models: Sequence[ModelInfo], capacities: Mapping[str, int] | None = None) -> None:
        self._models = list(models)
        self._capacities = dict(capacities or {})

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def capacity(self, model: str) -> int | None:
        return self._capacities.get(model)


class EngineModels:
    """The models of the engine in this process, read live: LoRA adapters come and go at run time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def models(self) -> list[ModelInfo]:
        return served_models(self._engine)

    def capacity(self, model: str) -> int | None:
        # Live (a remote server's reported load); adapters share their base model's batch.
        return capacity_now(self._engine) if any(info.name == model for info in self.models()) else None


def served_models(engine: Engine) -> list[ModelInfo]:
    """The engine's model and, where it serves LoRA adapters, one `base:adapter` entry per adapter."""
    return engine.served_models() if isinstance(engine, AdapterHost) else [engine.info]


class RedisModels:
    """Workers `advertise`; gateways `refresh` (or run `watch`) and read `models()`."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._client = client
        self._pattern = f"{prefix}:model:*"
        self._prefix = f"{prefix}:model:"
        self._models: list[ModelInfo] = []
        self._capacities: dict[str, int] = {}

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def capacity(self, model: str) -> int | None:
        return self._capacities.get(model)

    async def advertise(
        self, worker_id: str, models: Sequence[ModelInfo], ttl_s: float, capacity: int | None = None
    ) -> None:
        entries = [{**asdict(model), _CAPACITY: capacity} for model in models]
        await self._client.set(self._prefix + worker_id, orjson.dumps(entries), px=int(ttl_s * 1000))

    async def withdraw(self, worker_id: str) -> None:
        await self._client.delete(self._prefix + worker_id)

    async def refresh(self) -> None:
        keys = [key async for key in self._client.scan_iter(match=self._pattern, count=500)]
        bodies = await self._client.mget(keys) if keys else []
        found: dict[str, ModelInfo] = {}
        capacities: dict[str, int] = {}
        for body in bodies:
            if body is None:
                continue
            for fields in orjson.loads(body):
                capacity = fields.pop(_CAPACITY, None)
                info = ModelInfo(**fields)
                found.setdefault(info.name, info)
                if isinstance(capacity, int):
                    capacities[info.name] = capacities.get(info.name, 0) + capacity
        self._models = sorted(found.values(), key=lambda model: model.name)
        self._capacities = capacities

    async def watch(self, interval_s: float) -> None:
        """Refresh forever (a gateway's background task); Redis hiccups keep the last reading."""
        while True:
            try:
                await self.refresh()
            except (redis.RedisError, OSError) as exc:
                log.warning("model_directory_refresh_failed", error_type=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def keep_advertising(
        self,
        worker_id: str,
        models: Sequence[ModelInfo] | Callable[[], Sequence[ModelInfo]],
        ttl_s: float,
        capacity: Callable[[], int | None] = lambda: None,
    ) -> None:
        """Renew a worker's advertisement forever (a worker's background task); `models` may be read
        live, and `capacity` is: each renewal carries the worker's capacity of the moment."""
        try:
            while True:
                try:
                    current = models() if callable(models) else models
                    await self.advertise(worker_id, current, ttl_s, capacity())
                except (redis.RedisError, OSError) as exc:
                    log.warning("model_advertise_failed", error_type=type(exc).__name__)
                await asyncio.sleep(ttl_s / 3)
        finally:
            try:
                await self.withdraw(worker_id)
            except (redis.RedisError, OSError):
                pass
