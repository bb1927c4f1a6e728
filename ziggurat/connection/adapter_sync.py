"""LoRA adapters across a split deployment: the desired set in Redis, each worker reconciling to it.

A gateway (`--role api`) has no engine, so it cannot load an adapter itself.
It records the desired adapters of a base model in the hash
`<prefix>:adapters:<model>` (name → path) and publishes the model's name on
`<prefix>:adapters:changed`. Every worker serving that base model reconciles
on the notice (and every couple of seconds anyway, so a lost notice or a
Redis hiccup only delays it): it loads the adapters it lacks and unloads those
removed, exactly as a local unload does (new requests refused at once, running
streams finish first). It then re-advertises its models at once, so gateways
list and route `base:adapter`, and writes what it has under
`<prefix>:adapter-status:<model>:<worker>` (expiring like its advertisement):
that is where a gateway reads which worker has which adapter, or why a path
failed to load there. A failing path is logged and reported, never fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import cast

import orjson
import redis.asyncio as redis

from ziggurat.application.catalog.adapters import WorkerAdapterState, WorkerState
from ziggurat.config import Settings
from ziggurat.connection.models import RedisModels
from ziggurat.errors import ZigguratError
from ziggurat.model.adapters import AdapterHost
from ziggurat.model.engine import capacity_now
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

RECONCILE_INTERVAL_S = 2.0
STATUS_TTL_S = 15.0


class RedisAdapters:
    """The shared adapter state: desired sets (written by gateways), status (written by workers)."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self.channel = f"{prefix}:adapters:changed"

    def _desired_key(self, model: str) -> str:
        return f"{self._prefix}:adapters:{model}"

    def _status_key(self, model: str, worker: str) -> str:
        return f"{self._prefix}:adapter-status:{model}:{worker}"

    async def desired(self, model: str) -> dict[str, str]:
        raw = await self._client.hgetall(self._desired_key(model))
        return {_text(name): _text(path) for name, path in raw.items()}

    async def put(self, model: str, name: str, path: str) -> bool:
        """Record `name` → `path`; False (nothing changed) when the name is already desired."""
        added = bool(await self._client.hsetnx(self._desired_key(model), name, path))
        if added:
            await self._client.publish(self.channel, model)
        return added

    async def remove(self, model: str, name: str) -> str | None:
        """Forget `name`; its path, or None when it was not desired."""
        key = self._desired_key(model)
        path = await self._client.hget(key, name)
        if path is None or not await self._client.hdel(key, name):
            return None
        await self._client.publish(self.channel, model)
        return _text(path)

    def pubsub(self) -> redis.client.PubSub:
        return self._client.pubsub()

    async def report(self, model: str, worker: str, states: dict[str, dict[str, str | None]]) -> None:
        await self._client.set(
            self._status_key(model, worker), orjson.dumps(states), px=int(STATUS_TTL_S * 1000)
        )

    async def withdraw(self, model: str, worker: str) -> None:
        await self._client.delete(self._status_key(model, worker))

    async def workers(self, model: str) -> dict[str, list[WorkerAdapterState]]:
        """Each live worker serving `model` with adapters → the adapters it reported, by name."""
        prefix = self._status_key(model, "")
        keys = [key async for key in self._client.scan_iter(match=prefix + "*", count=500)]
        bodies = await self._client.mget(keys) if keys else []
        found: dict[str, list[WorkerAdapterState]] = {}
        for key, body in zip(keys, bodies, strict=True):
            if body is None:
                continue
            worker = _text(key)[len(prefix) :]
            entries = cast(dict[str, dict[str, str | None]], orjson.loads(body))
            found[worker] = [
                WorkerAdapterState(
                    worker=worker,
                    name=name,
                    state=cast(WorkerState, fields.get("state") or "error"),
                    path=fields.get("path") or "",
                    error=fields.get("error"),
                )
                for name, fields in sorted(entries.items())
            ]
        return found


class AdapterReconciler:
    """One worker's engine kept in line with the desired adapters of its base model."""

    def __init__(
        self,
        host: AdapterHost,
        store: RedisAdapters,
        *,
        model: str,
        worker: str,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._host = host
        self._store = store
        self._model = model
        self._worker = worker
        self._on_change = on_change
        self._managed: set[str] = set()
        """Adapters this reconciler loaded; those from `engine.adapters` are never unloaded by it."""
        self._errors: dict[str, tuple[str, str]] = {}
        """name → (path, message) of paths that failed here; retried only once the path changes."""
        self._unloads: dict[str, asyncio.Task[None]] = {}

    async def reconcile(self) -> None:
        desired = await self._store.desired(self._model)
        loaded = {adapter.name: adapter for adapter in self._host.adapters()}
        changed = False
        for name, path in sorted(desired.items()):
            path = _normal(path)
            adapter = loaded.get(name)
            if adapter is None:
                if name not in self._unloads and self._errors.get(name, ("",))[0] != path:
                    changed |= await self._load(name, path)
            elif adapter.path != path and not adapter.is_unloading:
                if name in self._managed:
                    changed |= self._unload(name)  # loaded again with the new path once it is gone
                else:
                    message = f"A start-up adapter named '{name}' is loaded from '{adapter.path}'."
                    self._errors[name] = (path, message)
            elif adapter.path == path:
                self._errors.pop(name, None)
        for name in sorted(self._managed - desired.keys()):
            adapter = loaded.get(name)
            if adapter is not None and not adapter.is_unloading:
                changed |= self._unload(name)
        for name in list(self._errors):
            if name not in desired:
                del self._errors[name]
        if changed:
            await asyncio.sleep(0)  # the unload tasks mark their adapters as refusing requests
            await self._changed()
        else:
            await self.report()

    async def report(self) -> None:
        states: dict[str, dict[str, str | None]] = {}
        for adapter in self._host.adapters():
            state = "unloading" if adapter.is_unloading else "loaded"
            states[adapter.name] = {"state": state, "path": adapter.path, "error": None}
        for name, (path, message) in self._errors.items():
            if name not in states or states[name]["path"] != path:
                states[name] = {"state": "error", "path": path, "error": message}
        await self._store.report(self._model, self._worker, states)

    async def run(self) -> None:
        """Reconcile on every notice and every few seconds, for the worker's lifetime."""
        try:
            while True:
                try:
                    await self._listen()
                except (redis.RedisError, OSError) as exc:
                    log.warning("adapter_sync_failed", error_type=type(exc).__name__)
                    await asyncio.sleep(RECONCILE_INTERVAL_S)
                except Exception:  # a bug here must not stop the worker advertising its models
                    log.exception("adapter_sync_crashed")
                    await asyncio.sleep(RECONCILE_INTERVAL_S)
        finally:
            for task in self._unloads.values():
                task.cancel()
            with suppress(redis.RedisError, OSError):
                await self._store.withdraw(self._model, self._worker)

    async def _listen(self) -> None:
        pubsub = self._store.pubsub()
        try:
            await pubsub.subscribe(self._store.channel)
            while True:
                await self.reconcile()
                deadline = asyncio.get_running_loop().time() + RECONCILE_INTERVAL_S
                while (left := deadline - asyncio.get_running_loop().time()) > 0:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                    if message is not None and _text(message["data"]) == self._model:
                        break
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _load(self, name: str, path: str) -> bool:
        try:
            await self._host.load_adapter(name, path)
        except ZigguratError as exc:
            log.warning("adapter_load_failed", model=self._model, adapter=name, path=path, error=exc.message)
            self._errors[name] = (path, exc.message)
            return True
        except Exception as exc:  # a broken adapter file must not take the worker down
            log.exception("adapter_load_failed", model=self._model, adapter=name, path=path)
            self._errors[name] = (path, f"{type(exc).__name__}: {exc}")
            return True
        log.info("adapter_loaded", model=self._model, adapter=name, path=path)
        self._errors.pop(name, None)
        self._managed.add(name)
        return True

    def _unload(self, name: str) -> bool:
        if name in self._unloads:
            return False
        self._unloads[name] = asyncio.create_task(self._drain_and_unload(name), name=f"unload-{name}")
        return True

    async def _drain_and_unload(self, name: str) -> None:
        try:
            await self._host.unload_adapter(name)
            log.info("adapter_unloaded", model=self._model, adapter=name)
        except ZigguratError as exc:
            log.warning("adapter_unload_failed", model=self._model, adapter=name, error=exc.message)
        finally:
            self._managed.discard(name)
            del self._unloads[name]
        with suppress(redis.RedisError, OSError):
            await self.reconcile()  # a new path for the same name loads now

    async def _changed(self) -> None:
        if self._on_change is not None:
            await self._on_change()
        await self.report()


async def keep_adapters_in_sync(
    host: AdapterHost, directory: RedisModels, store: RedisAdapters, *, worker: str, ttl_s: float
) -> None:
    """A worker's background task: reconcile its adapters and advertise its models, both live.

    The first reconcile runs before the first advertisement, so a worker that
    starts later comes up with the adapters already asked for.
    """
    base = host.served_models()[0]
    capacity = partial(capacity_now, host)

    async def advertise_now() -> None:
        with suppress(redis.RedisError, OSError):
            await directory.advertise(worker, host.served_models(), ttl_s, capacity())

    reconciler = AdapterReconciler(host, store, model=base.name, worker=worker, on_change=advertise_now)
    try:
        await reconciler.reconcile()
    except (redis.RedisError, OSError) as exc:
        log.warning("adapter_sync_failed", error_type=type(exc).__name__)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(directory.keep_advertising(worker, host.served_models, ttl_s, capacity))
        tasks.create_task(reconciler.run())


@asynccontextmanager
async def open_shared_adapters(settings: Settings) -> AsyncIterator[RedisAdapters | None]:
    """The gateway's view of the shared adapter state; None unless it is a gateway of a split deployment."""
    if settings.role != "api" or settings.redis_url is None:
        yield None
        return
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=5)
    try:
        yield RedisAdapters(client, prefix=settings.broker.redis_prefix)
    finally:
        await client.aclose()


def _normal(path: str) -> str:
    """The path as the engine records it, so a desired path and a loaded one compare equal."""
    return str(Path(path))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
