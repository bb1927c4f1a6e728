"""Password hashing (argon2id) and the password policy.

Hashing costs tens of milliseconds of CPU by design, so it runs in a thread and
never blocks the event loop. Checking a login for an unknown email still
verifies against a dummy hash, so response time does not reveal which emails
are registered.
"""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import VerificationError

from ziggurat.errors import InvalidRequest

MIN_PASSWORD_LENGTH = 8
# Long enough for any passphrase or manager-generated secret, short enough that a
# megabyte "password" cannot be used to burn CPU.
MAX_PASSWORD_LENGTH = 1024


def check_password_policy(password: str) -> None:
    """Raise `InvalidRequest` when the password is too short or too long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.", param="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.", param="password"
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
        """Whether `password` matches; with no hash (unknown user) it costs the same and is False."""
        if password_hash is None:
            await self._verify(await self._dummy(), password)
            return False
        return await self._verify(password_hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except VerificationError:
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("ziggurat-dummy-password")
        return self._dummy_hash
