"""Bearer credentials: JWTs we minted for active users, or API keys; everything else is 401."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import event, update

from tests.application.conftest import TEST_SECRET_KEY, register
from ziggurat.application.auth.authenticator import Authenticator
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.schemas import ApiKeyCreate
from ziggurat.application.auth.tokens import AccessTokens
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User
from ziggurat.errors import Unauthenticated


def _forged(user_id: str, *, key: str | None, algorithm: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "role": "admin",
        "scopes": ["chat", "admin"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": "forged",
        "typ": "access",
    }
    return jwt.encode(claims, key, algorithm=algorithm)


async def test_an_access_token_gives_its_users_principal(application: Application) -> None:
    registration = await application.auth.register("a@example.com", "correct horse")
    principal = await application.authenticator.authenticate(registration.tokens.access_token)
    assert principal.user_id == registration.user.id and principal.api_key_id is None


@pytest.mark.parametrize(
    ("key", "algorithm"), [("another-key-" + "x" * 60, "HS256"), (None, "none"), (TEST_SECRET_KEY, "HS384")]
)
async def test_forged_tokens_are_refused(application: Application, key: str | None, algorithm: str) -> None:
    registration = await application.auth.register("a@example.com", "correct horse")
    with pytest.raises(Unauthenticated, match="invalid"):
        await application.authenticator.authenticate(
            _forged(registration.user.id, key=key, algorithm=algorithm)
        )


async def test_a_disabled_user_is_refused_at_once(application: Application, database: Database) -> None:
    registration = await application.auth.register("a@example.com", "correct horse")
    key = await application.api_keys.create(
        await application.authenticator.authenticate(registration.tokens.access_token), ApiKeyCreate(name="k")
    )
    async with database.session() as session:
        user = await session.get(User, registration.user.id)
        assert user is not None
        user.is_active = False
        await session.commit()

    with pytest.raises(Unauthenticated, match="disabled"):
        await application.authenticator.authenticate(registration.tokens.access_token)
    with pytest.raises(Unauthenticated, match="disabled"):
        await application.authenticator.authenticate(key.key)


async def test_a_demoted_admin_loses_the_admin_scope_at_once(
    application: Application, database: Database
) -> None:
    registration = await application.auth.register("a@example.com", "correct horse")
    async with database.session() as session:
        user = await session.get(User, registration.user.id)
        assert user is not None
        user.role = "user"
        await session.commit()
    principal = await application.authenticator.authenticate(registration.tokens.access_token)
    assert principal.role == "user" and principal.scopes == frozenset({"chat"})


@pytest.mark.parametrize("bearer", ["", "garbage", "a.b.c"])
async def test_garbage_is_refused(application: Application, bearer: str) -> None:
    with pytest.raises(Unauthenticated):
        await application.authenticator.authenticate(bearer)


async def test_cached_key_skips_the_database_until_revoked_here(
    application: Application, database: Database
) -> None:
    cache = CredentialCache(ttl_s=60)
    authenticator = Authenticator(
        database=database,
        access_tokens=AccessTokens(secret_key="k" * 64, algorithm="HS256", ttl_s=60),
        cache=cache,
    )
    owner = await register(application, "cache@example.com")
    created = await application.api_keys.create(owner, ApiKeyCreate(name="k"))
    first = await authenticator.authenticate(created.key)
    # Another replica disables the user: this process keeps trusting the cached check (bounded by the TTL) ...
    async with database.session() as session:
        await session.execute(update(User).where(User.id == owner.user_id).values(is_active=False))
        await session.commit()
    assert await authenticator.authenticate(created.key) == first
    # ... and a change made through this process evicts at once.
    cache.evict_user(owner.user_id)
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(created.key)


async def test_requests_on_one_key_that_miss_the_cache_together_share_one_check(
    application: Application, database: Database
) -> None:
    owner = await register(application, "herd@example.com")
    key = await application.api_keys.create(owner, ApiKeyCreate(name="k"))
    authenticator = Authenticator(
        database=database,
        access_tokens=AccessTokens(secret_key="k" * 64, algorithm="HS256", ttl_s=60),
        cache=CredentialCache(ttl_s=60),
    )
    lookups: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM api_keys" in statement:
            lookups.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    try:
        principals = await asyncio.gather(*(authenticator.authenticate(key.key) for _ in range(40)))
        wrong = await asyncio.gather(
            *(authenticator.authenticate(key.key + "x") for _ in range(5)), return_exceptions=True
        )
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", count)
    assert {principal.api_key_id for principal in principals} == {key.id}
    assert len(lookups) == 2  # one for the 40 requests on the real key, one for the 5 on the wrong one
    assert all(isinstance(result, Unauthenticated) for result in wrong)
