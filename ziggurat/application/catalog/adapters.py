"""Administering LoRA adapters on the engines of this process: list, load, unload, each audited.

An adapter lives inside an engine (`ziggurat.model.adapters.AdapterHost`), so
these actions reach only engines running in this process (`serve --role all`,
or a worker process that also serves the API). Workers of a split deployment
load theirs at start-up from `ZIGGURAT_ENGINE__ADAPTERS`. Unloading returns once
the adapter's running generations have finished; new requests for it are
refused (404) from the moment it is asked.
"""

from __future__ import annotations

from collections.abc import Sequence

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.database import Database
from ziggurat.errors import Forbidden, NotFound
from ziggurat.model.adapters import AdapterHost, AdapterInfo


class AdapterAdmin:
    def __init__(self, *, database: Database, engines: Sequence[object]) -> None:
        self._database = database
        self._engines = engines

    def list_adapters(self, principal: Principal, model: str) -> list[AdapterInfo]:
        _require_admin(principal)
        return self._host(model).adapters()

    async def load(self, principal: Principal, model: str, name: str, path: str) -> AdapterInfo:
        _require_admin(principal)
        info = await self._host(model).load_adapter(name, path)
        await self._audit(AuditAction.ADAPTER_LOADED, principal, model, name, path)
        return info

    async def unload(self, principal: Principal, model: str, name: str) -> None:
        _require_admin(principal)
        host = self._host(model)
        path = next((adapter.path for adapter in host.adapters() if adapter.name == name), None)
        await host.unload_adapter(name)
        await self._audit(AuditAction.ADAPTER_UNLOADED, principal, model, name, path)

    def _host(self, model: str) -> AdapterHost:
        for engine in self._engines:
            if isinstance(engine, AdapterHost) and engine.served_models()[0].name == model:
                return engine
        raise NotFound(f"No engine in this process serves '{model}' with LoRA adapters.", param="model")

    async def _audit(
        self, action: AuditAction, principal: Principal, model: str, name: str, path: str | None
    ) -> None:
        async with self._database.session() as session:
            details: dict[str, object] = {"model": model, "adapter": name, "path": path}
            AuditRepository(session).add(audit_event(action, actor_id=principal.user_id, details=details))
            await session.commit()


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage LoRA adapters.")
