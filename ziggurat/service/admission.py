"""Load shedding: refuse at once what would wait longer than its priority class may wait.

A bounded queue stops memory from growing, but a long queue still makes users
wait minutes for an answer they have given up on. Before a job is queued, the
gateway estimates how long it would wait,

    expected wait ≈ jobs ahead × mean service time ÷ worker slots,

and answers `503` with `Retry-After` when that exceeds the deadline of the
job's priority class (interactive chat waits least). Jobs ahead counts the
model's whole queue (RabbitMQ reports one depth per queue, not per priority),
which errs on the side of shedding background work first. The mean service
time is a moving average of the generations this gateway has seen end; until
it has seen some, nothing is shed (a cold gateway cannot know). Worker slots are
live: a remote engine's capacity follows what its servers report (queue, KV
cache, health), in one process and through the workers' advertisements alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ziggurat.connection.broker.base import Priority
from ziggurat.errors import Overloaded

_SMOOTHING = 0.2
"""Weight of the newest generation in the moving average of service time."""


@dataclass(slots=True, frozen=True)
class QueueDeadlines:
    """Longest acceptable expected queue wait per priority class, in seconds (None: never shed)."""

    interactive_s: float | None = 30.0
    api_s: float | None = 60.0
    background_s: float | None = 300.0

    def for_priority(self, priority: Priority) -> float | None:
        if priority >= Priority.INTERACTIVE:
            return self.interactive_s
        if priority >= Priority.API:
            return self.api_s
        return self.background_s


class LoadShedder:
    """Per-model service-time averages and the shedding decision. One per gateway process."""

    def __init__(
        self,
        *,
        deadlines: QueueDeadlines,
        queue_depth: Callable[[str], int],
        capacity: Callable[[str], int | None],
    ) -> None:
        self._deadlines = deadlines
        self._queue_depth = queue_depth
        self._capacity = capacity
        self._service_s: dict[str, float] = {}

    def observe(self, model: str, service_s: float) -> None:
        """A generation for `model` ended after `service_s` seconds of work (queue wait excluded if known)."""
        if service_s < 0 or not math.isfinite(service_s):
            return
        previous = self._service_s.get(model)
        self._service_s[model] = (
            service_s if previous is None else previous + _SMOOTHING * (service_s - previous)
        )

    def expected_wait_s(self, model: str) -> float | None:
        """The estimated queue wait for a job submitted now; None when it cannot be estimated yet."""
        service_s = self._service_s.get(model)
        slots = self._capacity(model)
        if service_s is None or slots is None:
            return None
        # No slot free now (a remote server reporting a full queue or KV cache): the queue waits
        # at least as long as with one, so estimate with one rather than not at all.
        return self._queue_depth(model) * service_s / max(slots, 1)

    def check(self, model: str, priority: Priority) -> None:
        """Raise `Overloaded` (503 + Retry-After) if the job would wait past its class's deadline."""
        deadline = self._deadlines.for_priority(priority)
        if deadline is None:
            return
        wait = self.expected_wait_s(model)
        if wait is not None and wait > deadline:
            retry_after = max(1, math.ceil(wait - deadline))
            raise Overloaded(
                f"The model '{model}' is too busy: the expected wait ({wait:.0f} s) exceeds "
                f"{deadline:.0f} s. Try again in about {retry_after} s.",
                retry_after_s=retry_after,
            )

    def averages(self) -> Mapping[str, float]:
        return dict(self._service_s)
