"""Password hashing (argon2id) and the password policy.

Hashing costs tens of milliseconds of CPU by design, so it runs in a thread and
never blocks the event loop. Checking a login for an unknown email still
verifies against a dummy hash, so response time does not reveal which emails
are registered.
"""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from ziggurat.errors import InvalidRequest

MIN_PASSWORD_LENGTH = 8
# Long enough for any passphrase or manager-generated secret, short enough that a
# megabyte "password" cannot be used to burn CPU.
MAX_PASSWORD_LENGTH = 1024

# The most common passwords of at least 8 characters in public breach corpora: the
# first ones any guessing attack tries. A short list on purpose; length does the rest.
COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password12", "password123", "password1234", "passw0rd", "p@ssw0rd",
        "p@ssword", "12345678", "123456789", "1234567890", "12345678910", "87654321", "11111111",
        "00000000", "88888888", "11223344", "12341234", "123123123", "qwertyui", "qwertyuiop",
        "qwerty123", "qwerty12", "1q2w3e4r", "1q2w3e4r5t", "1qaz2wsx", "zaq12wsx", "asdfghjk",
        "asdfghjkl", "asdf1234", "zxcvbnm1", "iloveyou", "iloveyou1", "sunshine", "princess",
        "football", "baseball", "superman", "starwars", "trustno1", "whatever", "welcome1",
        "welcome123", "letmein1", "letmein123", "abcd1234", "abc12345", "abcdefgh", "changeme",
        "changeme123", "computer", "internet", "michelle", "jennifer", "liverpool", "master123",
        "dragon123", "monkey123", "shadow123", "admin123", "administrator", "aa123456", "a1234567",
        "q1w2e3r4", "1234qwer", "qwer1234", "passwort", "motdepasse", "secret123", "default1",
    }
)  # fmt: skip


def check_password_policy(password: str, *, email: str | None = None) -> None:
    """Raise `InvalidRequest` for a password that is too short, too long, the email, or very common."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.", param="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.", param="password"
        )
    folded = password.strip().casefold()
    if email is not None and folded == email.strip().casefold():
        raise InvalidRequest("The password must not be your email address.", param="password")
    if folded in COMMON_PASSWORDS:
        raise InvalidRequest(
            "This password is among the most commonly used ones; choose another.", param="password"
        )


class PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile) unless told otherwise.

    Tests pass cheaper parameters; production keeps the defaults.
    """

    def __init__(self, *, time_cost: int | None = None, memory_cost_kib: int | None = None) -> None:
        defaults = argon2.PasswordHasher()
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost or defaults.time_cost,
            memory_cost=memory_cost_kib or defaults.memory_cost,
        )
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash (unknown user, OIDC-only account) it costs the same
        and is False."""
        if not password_hash:
            await self._verify(await self._dummy(), password)
            return False
        return await self._verify(password_hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("ziggurat-dummy-password")
        return self._dummy_hash
