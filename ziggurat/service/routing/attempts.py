"""A request's attempts: submit, give up before the first token, try again or elsewhere, or stop.

A request becomes a `FallbackRun`: its first job goes to the requested model;
if that job ends with an error before its first text, its queue is full, or
(with another model left to try) no text comes within the first-token timeout,
the run cancels it and submits the same request again, to the same model after
an exponential backoff with full jitter (`max_retries` times), then to the next
model of the chain. Once text has been sent the run never switches: a second
model would change the answer. After that, a worker that dies is the broker's
business (redelivery resumes the text), and the run only enforces the
gateway's inter-token and total timeouts, by cancelling the job.

The run makes each decision once, whichever of its readers (`fallback.py`)
asks first; the others get the same answer. The `n`-th job queued for request
`id` is job `id.n` (the first is `id` itself); `job` stays the request's own,
so stored replies, stops and resumes keep using the id the caller knows. What this module does not do: read
streams (the readers do), fall back after the first token, fit the prompt to
the fallback model's context window, or check that the caller may use a
fallback model (the operator chose the chain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from ziggurat.connection.broker.base import Job
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.streams.base import cancelled_end, timeout_end
from ziggurat.errors import Overloaded
from ziggurat.model.engine import GenerationEnd
from ziggurat.service.metrics import Metrics
from ziggurat.service.routing.policy import FallbackReason, RoutingPolicy, attempt_job_id
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

ALL_OVERLOADED = "Every model that could answer this request is at capacity; please try again shortly."
NO_FIRST_TOKEN = "The model did not start answering in time; please try again."
TOTAL_TIMEOUT = "The answer took longer than the {limit:g} s limit and was stopped."
STALLED = "The model stopped responding for over {limit:g} s and the answer was stopped."


Enqueue = Callable[[Job], Awaitable[None]]
"""Queue one job or raise `Overloaded` (load shedding, a full queue)."""


@dataclass(slots=True, frozen=True)
class Router:
    """What a run needs from the gateway: the policy, the broker, metrics, and which models are served."""

    policy: RoutingPolicy
    broker: Broker
    metrics: Metrics
    enqueue: Enqueue
    is_served: Callable[[str], bool]

    async def start(self, job: Job) -> FallbackRun:
        """Submit `job` (model resolved) through its chain; `Overloaded` when every try was refused."""
        run = FallbackRun(job, self)
        await run.begin()
        return run


class FallbackRun:
    """One request's attempts and the decisions about them, shared by all its readers."""

    def __init__(self, job: Job, router: Router) -> None:
        self.job = job
        self.attempts: list[Job] = []
        self._router = router
        self._policy = router.policy
        self._chain = router.policy.chain(job.request.model)
        self._candidate = 0
        self._retries = 0
        self._submitted_at: list[float] = []
        self._committed: int | None = None
        self._leaving: set[int] = set()
        self._outcomes: dict[int, asyncio.Future[Job | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._halt: GenerationEnd | None = None
        self.final_end: GenerationEnd | None = None
        """The end readers get when the run gave up before any attempt answered."""
        total = self._policy.total_timeout_s
        self._deadline = time.monotonic() + total if total is not None else None
        self._seen = 0
        self._seen_at = 0.0
        self._watch: asyncio.TimerHandle | None = None

    @property
    def committed(self) -> int | None:
        """The index of the attempt that answers, once its first text (or a final end) arrived."""
        return self._committed

    @property
    def answered_by(self) -> str:
        """The model of the answering attempt (of the latest one until an attempt answers)."""
        index = self._committed if self._committed is not None else len(self.attempts) - 1
        return self.attempts[index].request.model if index >= 0 else self.job.request.model

    @property
    def watches_gaps(self) -> bool:
        return self._policy.inter_token_timeout_s is not None

    async def begin(self) -> None:
        model = self._chain[0]
        while True:
            job = self._next_job(model)
            try:
                await self._router.enqueue(job)
            except Overloaded:
                step = self._step("overloaded", model)
                if step is None:
                    raise
                model, delay = step
                await self._policy.sleep(delay)
                continue
            self._submitted(job)
            return

    def start_index(self) -> int:
        """Where a new reader starts: the answering attempt, else the latest (earlier ones sent no text)."""
        if self._committed is not None:
            return self._committed
        return len(self.attempts) - 1

    def commit(self, index: int) -> bool:
        """Attempt `index` sent its first event; False when the run has already left it."""
        if index in self._leaving:
            return False
        if self._committed is None:
            self._committed = index
            self._arm_watch()
        return self._committed == index

    def leave(
        self, index: int, reason: FallbackReason, end: GenerationEnd | None
    ) -> asyncio.Future[Job | None] | None:
        """Give attempt `index` up (once, whoever asks); the future gives the next attempt or None.

        None when the attempt has already answered: the caller goes on reading it.
        """
        if index in self._leaving:
            return self._outcome(index)
        if self._committed == index:
            return None
        self._leaving.add(index)
        self._start_move(index, reason, end)
        return self._outcome(index)

    def outcome(self, index: int) -> asyncio.Future[Job | None]:
        return self._outcome(index)

    def is_left(self, index: int) -> bool:
        return index in self._leaving

    def wait_for_first(self, index: int) -> float | None:
        """Seconds a reader may wait for attempt `index`'s first entry before asking `on_deadline`."""
        deadlines: list[float] = []
        # Once the attempt is being left, its outcome comes without a deadline (the move bounds itself).
        if self._committed is None and index not in self._leaving:
            if self._deadline is not None:
                deadlines.append(self._deadline)
            timeout = self._policy.first_token_timeout_s
            if timeout is not None and self._has_next_model():
                deadlines.append(self._submitted_at[index] + timeout)
        if not deadlines:
            return None
        return max(min(deadlines) - time.monotonic(), 0.0)

    def on_deadline(self, index: int) -> asyncio.Future[Job | None] | None:
        """A reader's wait for attempt `index` ran out: stop the run, or leave the attempt."""
        if self._committed is not None:
            return None
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._halt_with(timeout_end(TOTAL_TIMEOUT.format(limit=self._policy.total_timeout_s)))
            return self._outcome(index)
        return self.leave(index, "timeout", None)

    def saw(self, count: int) -> None:
        """A reader got its `count`-th entry of the answering attempt (for the inter-token timeout)."""
        if count > self._seen:
            self._seen = count
            self._seen_at = time.monotonic()

    def final(self, end: GenerationEnd) -> GenerationEnd:
        """What a reader reports for the answering attempt's `end` (a gateway timeout replaces a cancel)."""
        self.finish()
        halt = self._halt
        if halt is not None and halt.error is not None and end.finish_reason == "cancelled":
            return dataclasses.replace(halt, usage=end.usage)
        return end

    def finish(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def cancel(self) -> None:
        """Stop the request: the current attempt is cancelled (in a task) and no other is started."""
        self._halt_with(cancelled_end())

    async def stop(self) -> None:
        """`cancel`, and return once the current attempt's cancel is sent."""
        self._halt_with(cancelled_end())
        if self.attempts:
            await self._cancel_job(self.attempts[-1].job_id)

    def _has_next_model(self) -> bool:
        return any(self._router.is_served(model) for model in self._chain[self._candidate + 1 :])

    def _outcome(self, index: int) -> asyncio.Future[Job | None]:
        outcome = self._outcomes.get(index)
        if outcome is None:
            outcome = self._outcomes[index] = asyncio.get_running_loop().create_future()
        return outcome

    def _next_job(self, model: str) -> Job:
        # Numbered by jobs queued: a refused one left no trace, so the next try reuses its id (and the
        # first queued job keeps the request's id, which another gateway can resume).
        # Each try is queued now: its queue wait must not include earlier tries and backoff pauses.
        attempt = len(self.attempts)
        job_id = self.job.job_id if attempt == 0 else attempt_job_id(self.job.job_id, attempt)
        request = dataclasses.replace(self.job.request, model=model, request_id=job_id)
        return dataclasses.replace(self.job, job_id=job_id, request=request, enqueued_at=time.time())

    def _submitted(self, job: Job) -> None:
        self.attempts.append(job)
        self._submitted_at.append(time.monotonic())

    def _step(self, reason: FallbackReason, from_model: str) -> tuple[str, float] | None:
        """The next model to try and the pause before it; None when the chain is exhausted."""
        policy = self._policy
        step: tuple[str, float] | None = None
        if reason != "timeout" and self._retries < policy.max_retries:
            self._retries += 1
            step = (self._chain[self._candidate], policy.backoff_s(self._retries))
        else:
            while step is None and self._candidate + 1 < len(self._chain):
                self._candidate += 1
                self._retries = 0
                if self._router.is_served(self._chain[self._candidate]):
                    step = (self._chain[self._candidate], 0.0)
        if step is not None:
            self._router.metrics.fallbacks.labels(from_model, step[0], reason).inc()
            log.info(
                "generation_fallback",
                job_id=self.job.job_id,
                from_model=from_model,
                to_model=step[0],
                reason=reason,
                delay_s=round(step[1], 3),
            )
        return step

    async def _move_on(self, index: int, reason: FallbackReason, end: GenerationEnd | None) -> Job | None:
        left = self.attempts[index]
        if reason == "timeout":
            await self._cancel_job(left.job_id)
        failure = end if end is not None else timeout_end(NO_FIRST_TOKEN)
        model = left.request.model
        while self._halt is None:
            step = self._step(reason, model)
            if step is None:
                self.final_end = failure
                return None
            model, delay = step
            if delay > 0 and not await self._pause(delay):
                break
            job = self._next_job(model)
            try:
                await self._router.enqueue(job)
            except Overloaded:
                reason, failure = "overloaded", timeout_end(ALL_OVERLOADED)
                continue
            self._submitted(job)
            if self._halt is not None:
                await self._cancel_job(job.job_id)
                break
            return job
        self.final_end = self._halt
        return None

    async def _pause(self, delay_s: float) -> bool:
        """Sleep before a retry; False when the total deadline passed meanwhile (the run is halted)."""
        if self._deadline is not None:
            delay_s = min(delay_s, max(self._deadline - time.monotonic(), 0.0))
        await self._policy.sleep(delay_s)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._halt_with(timeout_end(TOTAL_TIMEOUT.format(limit=self._policy.total_timeout_s)))
            return False
        return True

    def _halt_with(self, end: GenerationEnd) -> None:
        if self._halt is not None:
            return
        self._halt = end
        self.finish()
        if not self.attempts:
            return
        index = len(self.attempts) - 1
        self._spawn(self._cancel_job(self.attempts[index].job_id))
        if self._committed is None and index not in self._leaving:
            self._leaving.add(index)
            self.final_end = end
            outcome = self._outcome(index)
            if not outcome.done():
                outcome.set_result(None)

    def _arm_watch(self) -> None:
        """After the first text: one timer for the total and inter-token limits, re-armed lazily."""
        deadlines: list[float] = []
        if self._deadline is not None:
            deadlines.append(self._deadline)
        gap = self._policy.inter_token_timeout_s
        if gap is not None:
            if not self._seen_at:
                self._seen_at = time.monotonic()
            deadlines.append(self._seen_at + gap)
        if deadlines and self._halt is None:
            delay = max(min(deadlines) - time.monotonic(), 0.0)
            self._watch = asyncio.get_running_loop().call_later(delay, self._on_watch)

    def _on_watch(self) -> None:
        self._watch = None
        now = time.monotonic()
        gap = self._policy.inter_token_timeout_s
        if self._deadline is not None and now >= self._deadline:
            log.warning("generation_timed_out", job_id=self.job.job_id, limit="total")
            self._halt_with(timeout_end(TOTAL_TIMEOUT.format(limit=self._policy.total_timeout_s)))
        elif gap is not None and now - self._seen_at >= gap:
            log.warning("generation_timed_out", job_id=self.job.job_id, limit="inter_token")
            self._halt_with(timeout_end(STALLED.format(limit=gap)))
        else:
            self._arm_watch()

    async def _cancel_job(self, job_id: str) -> None:
        try:
            await self._router.broker.cancel(job_id)
        except Exception as exc:  # the job then runs to its end unread; nothing else is at stake
            log.warning("job_cancel_failed", job_id=job_id, error_type=type(exc).__name__)

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_move(self, index: int, reason: FallbackReason, end: GenerationEnd | None) -> None:
        outcome = self._outcome(index)

        async def move() -> None:
            try:
                job = await self._move_on(index, reason, end)
            except Exception as exc:  # a broker failure: every reader of the run gets it
                failure = type(exc).__name__
                log.warning("generation_fallback_failed", job_id=self.job.job_id, error_type=failure)
                if not outcome.done():
                    outcome.set_exception(exc)
                return
            if not outcome.done():
                outcome.set_result(job)

        self._spawn(move())
