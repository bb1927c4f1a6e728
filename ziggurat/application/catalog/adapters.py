"""Administering LoRA adapters: list, load, unload, each audited, in one process or across workers.

An adapter lives inside an engine (`ziggurat.model.adapters.AdapterHost`). When
an engine in this process serves the model (`serve --role all`), the actions
reach it directly, as they always did: unloading returns once the adapter's
running generations have finished, and new requests for it are refused (404)
from the moment it is asked.

A gateway of a split deployment (`--role api`) has no engine: it records the
desired adapters in the shared store (`SharedAdapters`, Redis) and every
worker serving the base model reconciles to it. Loading then answers once this
gateway routes `base:adapter` (confirmed) or after `wait_s` (accepted, still
pending or failed on the workers; `list_adapters` tells which). Unloading
answers once this gateway no longer routes it; the workers' running streams
still finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, Protocol

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.database import Database
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound
from ziggurat.model.adapters import ADAPTER_NAME, AdapterHost, AdapterInfo, adapter_model_name

WorkerState = Literal["loaded", "unloading", "error", "pending"]


@dataclass(slots=True, frozen=True)
class WorkerAdapterState:
    """One adapter on one worker, as that worker last reported it."""

    worker: str
    name: str
    state: WorkerState
    path: str
    error: str | None = None


@dataclass(slots=True, frozen=True)
class AdapterStatus:
    """An adapter as the admin sees it; `workers` is empty in one process (the engine is right here)."""

    name: str
    model: str
    path: str
    running: int = 0
    is_unloading: bool = False
    workers: tuple[WorkerAdapterState, ...] = field(default_factory=tuple)


class SharedAdapters(Protocol):
    """The desired adapters of each base model and the workers' reports, shared by every process."""

    async def desired(self, model: str) -> dict[str, str]: ...

    async def put(self, model: str, name: str, path: str) -> bool:
        """False when the name is already desired."""
        ...

    async def remove(self, model: str, name: str) -> str | None:
        """The removed path; None when the name was not desired."""
        ...

    async def workers(self, model: str) -> dict[str, list[WorkerAdapterState]]: ...


class AdapterAdmin:
    def __init__(
        self,
        *,
        database: Database,
        engines: Sequence[object],
        shared: SharedAdapters | None = None,
        served: Callable[[], list[str]] | None = None,
        wait_s: float = 10.0,
    ) -> None:
        """`served`: the model names this process routes now (the gateway's model directory)."""
        self._database = database
        self._engines = engines
        self._shared = shared
        self._served = served or (lambda: [])
        self._wait_s = wait_s

    async def list_adapters(self, principal: Principal, model: str) -> list[AdapterStatus]:
        _require_admin(principal)
        host = self._local(model)
        if host is not None:
            return [_status(info) for info in host.adapters()]
        shared = await self._shared_for(model)
        return await self._shared_statuses(shared, model)

    async def load(
        self, principal: Principal, model: str, name: str, path: str
    ) -> tuple[AdapterStatus, bool]:
        """The adapter, and whether it is served now (False: recorded, the workers are still at it)."""
        _require_admin(principal)
        host = self._local(model)
        if host is not None:
            info = await host.load_adapter(name, path)
            await self._audit(AuditAction.ADAPTER_LOADED, principal, model, name, path)
            return _status(info), True
        shared = await self._shared_for(model)
        if not ADAPTER_NAME.fullmatch(name):
            raise InvalidRequest(
                "An adapter name is 1-64 letters, digits, '.', '_' or '-' and starts with a letter or digit.",
                param="name",
            )
        if not PurePosixPath(path).is_absolute():
            raise InvalidRequest("The adapter path must be an absolute path on the workers.", param="path")
        if not await shared.put(model, name, path):
            raise Conflict(f"An adapter named '{name}' is already loaded; unload it first.", param="name")
        await self._audit(AuditAction.ADAPTER_LOADED, principal, model, name, path)
        served = adapter_model_name(model, name)
        deadline = time.monotonic() + self._wait_s
        while served not in self._served() and time.monotonic() < deadline:
            if await self._failed_everywhere(shared, model, name):
                break
            await asyncio.sleep(0.1)
        status = next(s for s in await self._shared_statuses(shared, model) if s.name == name)
        return status, served in self._served()

    async def unload(self, principal: Principal, model: str, name: str) -> None:
        _require_admin(principal)
        host = self._local(model)
        if host is not None:
            path = next((adapter.path for adapter in host.adapters() if adapter.name == name), None)
            await host.unload_adapter(name)
            await self._audit(AuditAction.ADAPTER_UNLOADED, principal, model, name, path)
            return
        shared = await self._shared_for(model)
        removed = await shared.remove(model, name)
        if removed is None:
            raise NotFound(f"No adapter named '{name}' is loaded.", param="name")
        await self._audit(AuditAction.ADAPTER_UNLOADED, principal, model, name, removed)
        served = adapter_model_name(model, name)
        deadline = time.monotonic() + self._wait_s
        # New requests get a 404 here once the directory drops it; a directory refresh has no event to await.
        while served in self._served() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    def _local(self, model: str) -> AdapterHost | None:
        for engine in self._engines:
            if isinstance(engine, AdapterHost) and engine.served_models()[0].name == model:
                return engine
        return None

    async def _shared_for(self, model: str) -> SharedAdapters:
        """The shared store, when some live worker serves `model` with adapters (it reports its status)."""
        if self._shared is None or not await self._shared.workers(model):
            raise NotFound(f"No engine serves '{model}' with LoRA adapters.", param="model")
        return self._shared

    async def _failed_everywhere(self, shared: SharedAdapters, model: str, name: str) -> bool:
        workers = await shared.workers(model)
        states = [next((s for s in adapters if s.name == name), None) for adapters in workers.values()]
        return bool(states) and all(state is not None and state.state == "error" for state in states)

    async def _shared_statuses(self, shared: SharedAdapters, model: str) -> list[AdapterStatus]:
        desired = await shared.desired(model)
        workers = await shared.workers(model)
        names = sorted(set(desired) | {s.name for adapters in workers.values() for s in adapters})
        statuses = []
        for name in names:
            per_worker = []
            for worker, adapters in sorted(workers.items()):
                state = next((s for s in adapters if s.name == name), None)
                if state is None and name in desired:
                    state = WorkerAdapterState(worker=worker, name=name, state="pending", path=desired[name])
                if state is not None:
                    per_worker.append(state)
            path = desired.get(name) or next((s.path for s in per_worker), "")
            statuses.append(
                AdapterStatus(
                    name=name,
                    model=adapter_model_name(model, name),
                    path=path,
                    # Not desired any more and still draining somewhere; a start-up adapter stays as it is.
                    is_unloading=name not in desired and any(s.state == "unloading" for s in per_worker),
                    workers=tuple(per_worker),
                )
            )
        return statuses

    async def _audit(
        self, action: AuditAction, principal: Principal, model: str, name: str, path: str | None
    ) -> None:
        async with self._database.session() as session:
            details: dict[str, object] = {"model": model, "adapter": name, "path": path}
            AuditRepository(session).add(audit_event(action, actor_id=principal.user_id, details=details))
            await session.commit()


def _status(info: AdapterInfo) -> AdapterStatus:
    return AdapterStatus(
        name=info.name, model=info.model, path=info.path, running=info.running, is_unloading=info.is_unloading
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage LoRA adapters.")
