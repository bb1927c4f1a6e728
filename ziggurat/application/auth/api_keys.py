"""API keys: long-lived bearer secrets for programs (the OpenAI SDK, scripts).

A key is `zk-` plus 256 random bits. It is shown once, at creation; afterwards
only its prefix (enough to recognise it in a list) and its SHA-256 digest are
kept. Keys are created and revoked from an interactive session only: a leaked
key must not be able to mint more keys that would outlive its revocation.
"""

from __future__ import annotations

from datetime import timedelta

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.models import ApiKey
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.repository import ApiKeyRepository
from ziggurat.application.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from ziggurat.application.auth.tokens import digest, new_secret
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Forbidden, NotFound
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

API_KEY_PREFIX = "zk-"
# Shown in lists: the marker plus 8 random characters, about 48 bits, enough to tell keys apart.
DISPLAY_PREFIX_LENGTH = len(API_KEY_PREFIX) + 8


def new_api_key() -> str:
    return API_KEY_PREFIX + new_secret()


def is_api_key(bearer: str) -> bool:
    return bearer.startswith(API_KEY_PREFIX)


class ApiKeyService:
    def __init__(self, *, database: Database, credential_cache: CredentialCache) -> None:
        self._database = database
        self._credential_cache = credential_cache

    async def create(self, principal: Principal, request: ApiKeyCreate) -> ApiKeyCreated:
        _require_interactive(principal)
        scopes = frozenset(request.scopes)
        if not scopes <= principal.scopes:
            raise Forbidden("Your role does not allow creating a key with these scopes.", param="scopes")
        secret = new_api_key()
        now = utcnow()
        key = ApiKey(
            id=new_id(),
            user_id=principal.user_id,
            name=request.name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            key_hash=digest(secret),
            scopes=sorted(scopes),
            created_at=now,
            expires_at=now + timedelta(days=request.expires_in_days) if request.expires_in_days else None,
        )
        async with self._database.session() as session:
            await ApiKeyRepository(session).add(key)
            AuditRepository(session).add(
                audit_event(
                    AuditAction.KEY_CREATED,
                    actor_id=principal.user_id,
                    user_id=principal.user_id,
                    details={"key_id": key.id, "name": key.name, "scopes": key.scopes},
                )
            )
            await session.commit()
        log.info("api_key_created", key_id=key.id, user_id=principal.user_id)
        return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)

    async def list_keys(self, principal: Principal) -> list[ApiKeyOut]:
        async with self._database.session() as session:
            keys = await ApiKeyRepository(session).list_for_user(principal.user_id)
        return [ApiKeyOut.model_validate(key) for key in keys]

    async def revoke(self, principal: Principal, key_id: str) -> None:
        """Revoke one of the principal's keys. Idempotent; another user's key is `NotFound`."""
        _require_interactive(principal)
        async with self._database.session() as session:
            key = await ApiKeyRepository(session).get_for_user(principal.user_id, key_id)
            if key is None:
                raise NotFound("No API key with this id.", param="key_id")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                AuditRepository(session).add(
                    audit_event(
                        AuditAction.KEY_REVOKED,
                        actor_id=principal.user_id,
                        user_id=principal.user_id,
                        details={"key_id": key.id},
                    )
                )
                await session.commit()
                log.info("api_key_revoked", key_id=key.id, user_id=principal.user_id)
        self._credential_cache.evict_api_key(key_id)


def _require_interactive(principal: Principal) -> None:
    if not principal.is_interactive:
        raise Forbidden("API keys cannot manage API keys; sign in to create or revoke keys.")
