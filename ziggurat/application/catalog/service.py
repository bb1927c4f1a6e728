"""Which models a principal may see and use: the one place model access is decided.

`can_use_model` combines the two sources of truth: the principal's role
(`chat` permission and its `allowed_models`) and the model registry row, if
any (`enabled`, `allowed_roles`). Every caller that lets a user reach a model
(`/v1/models`, `/v1/chat/completions`, chat conversations) goes through
`ModelCatalog.resolve` or `list_models`. A model the principal may not use is
reported exactly like one that does not exist (`ModelNotFound`), so its
existence does not leak.

The registry is small and read on every request, so it is kept in memory and
re-read at most every `ttl_s` seconds; changes made through this process apply
at once, other replicas see them within `ttl_s`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction, AuditEvent
from ziggurat.application.auth.principal import Principal
from ziggurat.application.catalog.models import ModelEntry
from ziggurat.application.catalog.schemas import ModelEntryCreate, ModelEntryOut, ModelEntryUpdate
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Conflict, Forbidden, ModelNotFound, NotFound
from ziggurat.model.engine import ModelInfo
from ziggurat.service.generation import GenerationService
from ziggurat.single_flight import SingleFlight

_NOT_FOUND = "No registry entry with this id."


@dataclass(slots=True, frozen=True)
class RegistryRule:
    """What the registry says about one model name (a snapshot of its row)."""

    enabled: bool
    allowed_roles: frozenset[str] | None
    context_length: int | None
    description: str


def can_use_model(principal: Principal, name: str, rule: RegistryRule | None = None) -> bool:
    if not principal.may_use_model(name):
        return False
    if rule is None:
        return True
    return rule.enabled and (rule.allowed_roles is None or principal.role in rule.allowed_roles)


@dataclass(slots=True, frozen=True)
class CatalogModel:
    """A served model as a principal sees it: engine info with registry metadata applied."""

    info: ModelInfo
    context_length: int | None
    description: str


class ModelCatalog:
    def __init__(
        self,
        *,
        database: Database,
        generation: GenerationService,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._generation = generation
        self._ttl_s = ttl_s
        self._clock = clock
        self._rules: dict[str, RegistryRule] = {}
        self._loaded_at: float | None = None
        self._version = 0
        """Counts admin changes, so a read begun before one does not refresh the rules."""
        self._reading: SingleFlight[None, dict[str, RegistryRule]] = SingleFlight()

    async def can_use_model(self, principal: Principal, name: str) -> bool:
        return can_use_model(principal, name, (await self._current_rules()).get(name))

    async def list_models(self, principal: Principal) -> list[CatalogModel]:
        rules = await self._current_rules()
        usable = [
            _catalog_model(info, rules.get(info.name))
            for info in self._generation.list_models()
            if can_use_model(principal, info.name, rules.get(info.name))
        ]
        # An alias is listed (under its own name) wherever the model it stands for is usable.
        by_name = {model.info.name: model for model in usable}
        for alias, target in self._generation.list_aliases().items():
            if target.name in by_name and alias not in by_name:
                usable.append(
                    dataclasses.replace(by_name[target.name], info=dataclasses.replace(target, name=alias))
                )
        return usable

    async def resolve(self, principal: Principal, name: str | None) -> ModelInfo:
        """The named model (or the first one the principal may use); `ModelNotFound` otherwise."""
        if not name:
            usable = await self.list_models(principal)
            if not usable:
                raise ModelNotFound("No model is available to you.", param="model")
            return usable[0].info
        info = self._generation.resolve_model(name)
        if not await self.can_use_model(principal, info.name):
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.", param="model"
            )
        return info

    async def list_entries(self, principal: Principal) -> list[ModelEntryOut]:
        _require_admin(principal)
        async with self._database.session() as session:
            rows = list(await session.scalars(select(ModelEntry).order_by(ModelEntry.name)))
        return [self._out(row) for row in rows]

    async def get_entry(self, principal: Principal, entry_id: str) -> ModelEntryOut:
        _require_admin(principal)
        async with self._database.session() as session:
            row = await session.get(ModelEntry, entry_id)
        if row is None:
            raise NotFound(_NOT_FOUND, param="entry_id")
        return self._out(row)

    async def create_entry(self, principal: Principal, request: ModelEntryCreate) -> ModelEntryOut:
        _require_admin(principal)
        now = utcnow()
        row = ModelEntry(id=new_id(), created_at=now, updated_at=now, **request.model_dump())
        async with self._database.session() as session:
            session.add(row)
            AuditRepository(session).add(_event(AuditAction.MODEL_CREATED, principal, row))
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("The registry already has an entry for this model.", param="name") from exc
        self._invalidate()
        return self._out(row)

    async def update_entry(
        self, principal: Principal, entry_id: str, request: ModelEntryUpdate
    ) -> ModelEntryOut:
        _require_admin(principal)
        changes = request.model_dump(exclude_unset=True)
        async with self._database.session() as session:
            row = await session.get(ModelEntry, entry_id)
            if row is None:
                raise NotFound(_NOT_FOUND, param="entry_id")
            for field, value in changes.items():
                if value is None and field in ("description", "default_parameters", "enabled"):
                    continue
                setattr(row, field, value)
            row.updated_at = utcnow()
            AuditRepository(session).add(_event(AuditAction.MODEL_UPDATED, principal, row))
            await session.commit()
        self._invalidate()
        return self._out(row)

    async def delete_entry(self, principal: Principal, entry_id: str) -> None:
        _require_admin(principal)
        async with self._database.session() as session:
            row = await session.get(ModelEntry, entry_id)
            if row is None:
                raise NotFound(_NOT_FOUND, param="entry_id")
            await session.delete(row)
            AuditRepository(session).add(_event(AuditAction.MODEL_DELETED, principal, row))
            await session.commit()
        self._invalidate()

    async def _current_rules(self) -> dict[str, RegistryRule]:
        """The registry's rules, read again after `ttl_s`; requests that find them stale together
        share one read (a hundred concurrent requests at expiry made a hundred queries)."""
        if self._loaded_at is not None and self._clock() - self._loaded_at < self._ttl_s:
            return self._rules
        return await self._reading.run(None, self._load)

    async def _load(self) -> dict[str, RegistryRule]:
        version, now = self._version, self._clock()
        async with self._database.session() as session:
            rows = await session.scalars(select(ModelEntry))
            rules = {
                row.name: RegistryRule(
                    enabled=row.enabled,
                    allowed_roles=frozenset(row.allowed_roles) if row.allowed_roles is not None else None,
                    context_length=row.context_length,
                    description=row.description,
                )
                for row in rows
            }
        if version == self._version:  # no admin change since this read began
            self._rules, self._loaded_at = rules, now
        return rules

    def _invalidate(self) -> None:
        """An admin changed the registry: the next request reads it afresh (not a read begun before)."""
        self._version += 1
        self._loaded_at = None
        self._reading.forget(None)

    def _out(self, row: ModelEntry) -> ModelEntryOut:
        served = {info.name for info in self._generation.list_models()}
        return ModelEntryOut.model_validate(row).model_copy(update={"is_served": row.name in served})


def _catalog_model(info: ModelInfo, rule: RegistryRule | None) -> CatalogModel:
    if rule is None:
        return CatalogModel(info=info, context_length=info.context_length, description=info.description)
    return CatalogModel(
        info=info,
        context_length=rule.context_length or info.context_length,
        description=rule.description or info.description,
    )


def _event(action: AuditAction, principal: Principal, row: ModelEntry) -> AuditEvent:
    return audit_event(
        action,
        actor_id=principal.user_id,
        details={"model": row.name, "enabled": row.enabled, "allowed_roles": row.allowed_roles},
    )


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage the model registry.")
