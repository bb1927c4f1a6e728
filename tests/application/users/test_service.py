"""Registration rules: first user is admin, emails are normalised, closed registration."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from tests.application.conftest import register
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.users.models import User
from ziggurat.application.users.service import UserService
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, Unauthenticated


async def test_the_first_user_is_admin_and_later_ones_are_not(application: Application) -> None:
    first = await application.users.register("Root@Example.com ", "correct horse")
    second = await application.users.register("someone@example.com", "correct horse")

    assert (first.email, first.role) == ("root@example.com", "admin")
    assert second.role == "user"
    assert first.password_hash != "correct horse"


async def test_concurrent_first_registrations_make_exactly_one_admin(application: Application) -> None:
    users = await asyncio.gather(
        *(application.users.register(f"u{i}@example.com", "correct horse") for i in range(4))
    )
    assert sorted(user.role for user in users) == ["admin", "user", "user", "user"]


async def test_an_email_registers_once_whatever_its_case(
    application: Application, database: Database
) -> None:
    await application.users.register("dup@example.com", "correct horse")
    with pytest.raises(Conflict):
        await application.users.register("DUP@example.com", "another password")
    async with database.session() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
async def test_invalid_emails_are_refused(application: Application, email: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await application.users.register(email, "correct horse")
    assert caught.value.param == "email"


async def test_short_passwords_are_refused(application: Application) -> None:
    with pytest.raises(InvalidRequest, match="at least 8"):
        await application.users.register("a@example.com", "short")


async def test_closed_registration_still_admits_the_first_user(
    database: Database, passwords: PasswordHasher
) -> None:
    users = UserService(database=database, passwords=passwords, allow_registration=False)
    admin = await users.register("admin@example.com", "correct horse")
    assert admin.role == "admin"
    with pytest.raises(Forbidden, match="closed"):
        await users.register("late@example.com", "correct horse")


async def test_me_describes_the_principal_and_refuses_a_disabled_account(
    application: Application, database: Database
) -> None:
    principal = await register(application, "me@example.com")
    me = await application.users.me(principal)
    assert (me.email, me.role, me.is_active) == ("me@example.com", "admin", True)

    async with database.session() as session:
        user = await session.get(User, principal.user_id)
        assert user is not None
        user.is_active = False
        await session.commit()
    with pytest.raises(Unauthenticated):
        await application.users.me(principal)
