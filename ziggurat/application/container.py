"""The application layer, assembled: database, migrations and the feature services.

`open_application` is the one place that builds the application services; the
composition root (`app.py`) calls it inside its lifespan with the generation
service it built, and the HTTP edge reaches the services through
`Services.application`. Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ziggurat.application.auth.api_keys import ApiKeyService
from ziggurat.application.auth.authenticator import Authenticator
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.service import AuthService
from ziggurat.application.auth.signing_key import load_or_create_signing_key
from ziggurat.application.auth.tokens import AccessTokens
from ziggurat.application.conversations.service import ConversationService
from ziggurat.application.store.database import Database
from ziggurat.application.store.schema import upgrade_database
from ziggurat.application.users.service import UserService
from ziggurat.config import Settings
from ziggurat.service.generation import GenerationService
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class Application:
    """The application services of one process, sharing one database."""

    database: Database
    users: UserService
    auth: AuthService
    authenticator: Authenticator
    api_keys: ApiKeyService
    conversations: ConversationService


def build_application(
    settings: Settings, *, database: Database, generation: GenerationService, passwords: PasswordHasher
) -> Application:
    """Wire the services around an open database (no I/O)."""
    secret_key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key is not None
        else load_or_create_signing_key(settings.data_dir)
    )
    access_tokens = AccessTokens(
        secret_key=secret_key, algorithm=settings.auth.jwt_algorithm, ttl_s=settings.auth.access_token_ttl_s
    )
    users = UserService(
        database=database, passwords=passwords, allow_registration=settings.auth.allow_registration
    )
    credential_cache = CredentialCache(ttl_s=settings.auth.credential_cache_ttl_s)
    return Application(
        database=database,
        users=users,
        auth=AuthService(
            database=database,
            users=users,
            passwords=passwords,
            access_tokens=access_tokens,
            refresh_token_ttl_s=settings.auth.refresh_token_ttl_s,
        ),
        authenticator=Authenticator(database=database, access_tokens=access_tokens, cache=credential_cache),
        api_keys=ApiKeyService(database=database, credential_cache=credential_cache),
        conversations=ConversationService(database=database, generation=generation),
    )


@asynccontextmanager
async def open_application(
    settings: Settings, generation: GenerationService, *, passwords: PasswordHasher | None = None
) -> AsyncIterator[Application]:
    """Migrate the database to the current schema, then yield the services; close all on exit."""
    url = settings.resolved_database_url
    await upgrade_database(url)
    database = Database(url)
    try:
        application = build_application(
            settings, database=database, generation=generation, passwords=passwords or PasswordHasher()
        )
        log.info("application_opened", database=database.url.get_backend_name())
        try:
            yield application
        finally:
            await application.conversations.aclose()
    finally:
        await database.aclose()
