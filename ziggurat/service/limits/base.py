"""The `RateLimiter` interface: check and charge a request's buckets at once, settle them later."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from ziggurat.service.limits.policy import Bucket, Decision

SlotAction = Literal["keep", "renew", "release"]


class RateLimiter(Protocol):
    """Counts against `Bucket`s. Safe across tasks; the Redis implementation across gateway replicas.

    `acquire` is all or nothing: either every bucket admits the request and
    all are charged (`tokens` for token buckets, one for the others, a slot
    named `ticket` held for `lease_s` in concurrency buckets), or none is
    charged. `settle` adds `token_delta` (negative: a refund) to the token
    buckets and renews, releases or keeps the ticket's slots. Neither raises
    when the backend is unreachable: limits fail open.

    `settles_inline`: `settle` never suspends (in-process state), so a reader being
    cancelled cannot interrupt it and it needs no task of its own.
    """

    settles_inline: bool

    async def acquire(
        self, buckets: Sequence[Bucket], *, tokens: int, ticket: str, lease_s: float
    ) -> Decision: ...

    async def settle(
        self,
        buckets: Sequence[Bucket],
        *,
        ticket: str,
        token_delta: int,
        slot: SlotAction,
        lease_s: float,
    ) -> None: ...
