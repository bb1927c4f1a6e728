"""The `EventStreams` interface: a job's events, from the worker that runs it back to any gateway.

One capped, expiring stream per job holds every event the job emitted, in
order, each with an opaque, ordered entry id. Keeping the stream (instead of
fire-and-forget messages) gives three things at once:

- a reader that drops can resume after the last entry id it saw, on any
  gateway (SSE `Last-Event-ID`, the WebSocket `after` field);
- a worker that takes over a redelivered job `claim`s it and learns the text
  already emitted, so it continues the answer instead of repeating it;
- several readers (the client's connection, the gateway task that stores the
  reply) read the same events independently.

Each claim starts a new *epoch*; appends carry the writer's epoch and are
refused once a newer claim exists (fencing), so a worker that was presumed
dead but is still running can never interleave text with its successor.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol

from ziggurat.model.engine import GenerationEnd, GenerationEvent, TokenLogprob, Usage

ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
"""Entry ids look like Redis stream ids (`<ms>-<seq>`) in every implementation."""


def is_entry_id(value: str) -> bool:
    return ENTRY_ID.fullmatch(value) is not None


@dataclass(slots=True, frozen=True)
class Chunk:
    """Text a worker emitted in one write: one or more engine deltas joined, and how many.

    `logprobs`: the joined deltas' token logprobs, in order, when the request asked for them.
    """

    text: str
    tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


Appendable = Chunk | GenerationEnd


@dataclass(slots=True, frozen=True)
class StreamEntry:
    entry_id: str
    event: GenerationEvent
    tokens: int = 0
    """Engine deltas this entry carries (0 for the end)."""


@dataclass(slots=True, frozen=True)
class Claim:
    """What a worker finds when it takes a job's stream."""

    status: Literal["run", "finished", "cancelled"]
    epoch: int = 0
    text: str = ""
    """The answer so far: the new worker continues after it."""
    tokens: int = 0


class AppendStatus(Enum):
    OK = "ok"
    FENCED = "fenced"
    """A newer claim owns the job: stop generating, another worker continues it."""
    LOST = "lost"
    """The stream's state is gone (the store restarted empty): the job cannot continue."""


class EventStreams(Protocol):
    """Per-job event streams. Safe across tasks."""

    appends_cost_a_round_trip: bool
    """Whether each `append` call waits for a server (then writers batch their appends)."""

    async def claim(self, job_id: str) -> Claim:
        """Take the job's stream for a new epoch (worker side).

        `finished`: the stream already ended, nothing to do (no new epoch).
        `cancelled`: the claim holds a new epoch only so the worker can write the end.
        """
        ...

    async def append(self, batch: Mapping[str, tuple[int, Sequence[Appendable]]]) -> dict[str, AppendStatus]:
        """Write entries for several jobs in one round trip: job id → (epoch, entries)."""
        ...

    def read(self, job_id: str, *, after: str | None = None) -> AsyncGenerator[StreamEntry, None]:
        """The job's entries after `after` (from the start when None), ending after the end event.

        Never hangs: when nothing arrives within the configured timeouts, it
        yields a final `GenerationEnd(finish_reason="error")` with an explanation.
        """
        ...

    async def cancel(self, job_id: str) -> None:
        """Ask whoever runs the job to stop; a job nobody has claimed yet ends at once. Idempotent."""
        ...

    def on_cancelled(self, job_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (once, from the event loop) when the job is cancelled (worker side).

        Returns the function that stops watching. A worker watches every job it runs
        this way: where the store can call back by itself (in process) that costs no
        task per job.
        """
        ...

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


def cancelled_end() -> GenerationEnd:
    """The end written for a job cancelled before any worker ran it."""
    return GenerationEnd(finish_reason="cancelled", usage=Usage(0, 0))


def timeout_end(message: str) -> GenerationEnd:
    return GenerationEnd(finish_reason="error", usage=Usage(0, 0), error=message)


NO_FIRST_EVENT = "No worker started this request in time; please try again."
STALLED = "The model stopped responding in the middle of the answer; please try again."
STREAM_LOST = "The answer's stream was lost (the stream store restarted); please try again."
