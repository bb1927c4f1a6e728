"""Sign-in, refresh-token rotation with reuse detection, sign-out."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from ziggurat.application.auth.models import RefreshToken
from ziggurat.application.auth.tokens import digest
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User
from ziggurat.errors import Unauthenticated


async def test_register_returns_the_user_and_a_working_session(application: Application) -> None:
    registration = await application.auth.register("new@example.com", "correct horse")

    principal = await application.authenticator.authenticate(registration.tokens.access_token)
    assert principal.user_id == registration.user.id
    assert registration.tokens.token_type == "bearer"
    assert registration.tokens.expires_in == 15 * 60


async def test_login_with_the_right_password_gives_tokens(application: Application) -> None:
    await application.auth.register("user@example.com", "correct horse")
    tokens = await application.auth.login("USER@example.com", "correct horse")

    principal = await application.authenticator.authenticate(tokens.access_token)
    assert principal.role == "admin" and principal.has_scope("chat") and principal.is_admin


@pytest.mark.parametrize(
    ("email", "password"), [("user@example.com", "wrong horse"), ("nobody@example.com", "x")]
)
async def test_login_failures_look_the_same(application: Application, email: str, password: str) -> None:
    await application.auth.register("user@example.com", "correct horse")
    with pytest.raises(Unauthenticated, match=r"^Incorrect email or password\.$"):
        await application.auth.login(email, password)


async def test_a_disabled_account_cannot_sign_in(application: Application, database: Database) -> None:
    registration = await application.auth.register("off@example.com", "correct horse")
    await _disable(database, registration.user.id)
    with pytest.raises(Unauthenticated, match="disabled"):
        await application.auth.login("off@example.com", "correct horse")
    with pytest.raises(Unauthenticated):
        await application.auth.refresh(registration.tokens.refresh_token)


async def test_refresh_rotates_the_pair_and_spends_the_old_token(
    application: Application, database: Database
) -> None:
    first = (await application.auth.register("r@example.com", "correct horse")).tokens
    second = await application.auth.refresh(first.refresh_token)

    assert second.refresh_token != first.refresh_token
    await application.authenticator.authenticate(second.access_token)
    async with database.session() as session:
        old = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == digest(first.refresh_token))
        )
        new = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == digest(second.refresh_token))
        )
    assert old is not None and new is not None
    assert old.revoked_at is not None and old.replaced_by == new.id
    assert new.family_id == old.family_id and new.revoked_at is None
    third = await application.auth.refresh(second.refresh_token)
    assert third.refresh_token not in {first.refresh_token, second.refresh_token}


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(application: Application) -> None:
    first = (await application.auth.register("r@example.com", "correct horse")).tokens
    other_session = await application.auth.login("r@example.com", "correct horse")
    second = await application.auth.refresh(first.refresh_token)

    with pytest.raises(Unauthenticated, match="already used"):
        await application.auth.refresh(first.refresh_token)
    with pytest.raises(Unauthenticated):
        await application.auth.refresh(second.refresh_token)
    # Another sign-in is another family, untouched.
    await application.auth.refresh(other_session.refresh_token)


async def test_racing_refreshes_of_one_token_leave_no_live_token_in_the_family(
    application: Application, database: Database
) -> None:
    first = (await application.auth.register("r@example.com", "correct horse")).tokens
    results = await asyncio.gather(
        *(application.auth.refresh(first.refresh_token) for _ in range(3)), return_exceptions=True
    )

    assert any(isinstance(result, Unauthenticated) for result in results)
    async with database.session() as session:
        live = await session.scalars(select(RefreshToken).where(RefreshToken.revoked_at.is_(None)))
        assert list(live) == []


async def test_logout_ends_the_session(application: Application) -> None:
    tokens = (await application.auth.register("l@example.com", "correct horse")).tokens
    await application.auth.logout(tokens.refresh_token)
    await application.auth.logout(tokens.refresh_token)
    await application.auth.logout("never-issued")

    with pytest.raises(Unauthenticated):
        await application.auth.refresh(tokens.refresh_token)


async def test_unknown_refresh_tokens_are_refused(application: Application) -> None:
    with pytest.raises(Unauthenticated, match="invalid or expired"):
        await application.auth.refresh("made-up")


async def _disable(database: Database, user_id: str) -> None:
    async with database.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.is_active = False
        await session.commit()
