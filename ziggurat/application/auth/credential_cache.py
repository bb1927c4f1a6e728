"""A short-lived, bounded memo of credential checks, so a busy API key costs no query per request.

Without it every request on `/v1` pays a database round trip (and on SQLite waits
for the single connection) just to learn what it learnt a moment ago. Entries
live `ttl_s` seconds; revoking a key or changing a user in this process evicts
at once, and other replicas see the change within `ttl_s` (say so where staleness
matters). Keys are SHA-256 digests of credentials, never the secrets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ziggurat.application.auth.principal import Principal


@dataclass(slots=True, frozen=True)
class _Entry:
    principal: Principal
    expires_at: float


class CredentialCache:
    """digest → Principal with expiry; evicts the oldest entry when full. One event loop, no locks."""

    def __init__(
        self, *, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[digest]
            return None
        return entry.principal

    def put(self, digest: str, principal: Principal, *, not_after: float | None = None) -> None:
        """Remember `principal`; `not_after` (monotonic time) caps the entry, e.g. at a key's expiry."""
        if self._ttl_s <= 0:
            return
        expires_at = self._clock() + self._ttl_s
        if not_after is not None:
            expires_at = min(expires_at, not_after)
        self._entries[digest] = _Entry(principal, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict_api_key(self, key_id: str) -> None:
        self._evict(lambda principal: principal.api_key_id == key_id)

    def evict_user(self, user_id: str) -> None:
        self._evict(lambda principal: principal.user_id == user_id)

    def evict_role(self, role: str) -> None:
        """Forget every check made for holders of `role` (its permissions or models changed)."""
        self._evict(lambda principal: principal.role == role)

    def _evict(self, matches: Callable[[Principal], bool]) -> None:
        for digest in [d for d, entry in self._entries.items() if matches(entry.principal)]:
            del self._entries[digest]
