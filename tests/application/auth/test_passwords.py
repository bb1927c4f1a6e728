"""Password hashing and policy (no database)."""

from __future__ import annotations

import pytest

from ziggurat.application.auth.passwords import PasswordHasher, check_password_policy
from ziggurat.errors import InvalidRequest


async def test_a_hash_verifies_only_its_password(passwords: PasswordHasher) -> None:
    hashed = await passwords.hash("correct horse")

    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "correct horse") is True
    assert await passwords.verify(hashed, "wrong horse") is False


async def test_an_unknown_user_is_checked_against_a_dummy_hash(passwords: PasswordHasher) -> None:
    assert await passwords.verify(None, "anything at all") is False


@pytest.mark.parametrize("password", ["", "short", "x" * 7, "x" * 1025])
def test_the_policy_refuses_too_short_or_too_long_passwords(password: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_password_policy(password)
    assert caught.value.param == "password"


def test_the_policy_accepts_eight_characters() -> None:
    check_password_policy("x7!kq2mz")
    check_password_policy("x" * 1024)


@pytest.mark.parametrize("password", ["password", "12345678", "Password1", " qwertyuiop ", "ILOVEYOU"])
def test_the_policy_refuses_very_common_passwords(password: str) -> None:
    with pytest.raises(InvalidRequest, match="commonly used") as caught:
        check_password_policy(password)
    assert caught.value.param == "password"


def test_the_policy_refuses_the_email_as_password() -> None:
    with pytest.raises(InvalidRequest, match="email"):
        check_password_policy("Me@Example.com", email="me@example.com")
    check_password_policy("me@example.com!", email="me@example.com")


async def test_a_malformed_or_empty_hash_never_verifies(passwords: PasswordHasher) -> None:
    assert await passwords.verify("", "anything at all") is False
    assert await passwords.verify("!", "anything at all") is False
