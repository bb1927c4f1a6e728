"""The decode loop of the transformers engine: one thread that owns the model and serves every request.

Requests wait in a queue. Each round the loop admits as many as its batcher
has room for (a free KV slot), runs one prefill step (for the lean runner a
chunk of at most `prefill_chunk_tokens` prompt tokens; for the HF path every
new prompt whole), then one decode step for every sequence past its prompt,
picks one token per sequence, turns it into text and hands the resulting events
to each request's `emit` callback, which the engine points at its event loop
(`call_soon_threadsafe`). A sequence leaves the batch the step it finishes or is
found cancelled, which frees its slot within one step.

Overlap (lean runner, `SlotBatcher.overlap`, on by default on CUDA): when every
decoding row is greedy without penalties or logprobs, the argmax stays on the
device as the next step's input and is copied to pinned memory asynchronously.
While the batch is unchanged (nothing admitted, prefilling or cancelled, no row
at its token limit) the next round launches the next step first and only then
reads, detokenises and emits the previous step's tokens, so that host work runs
while the GPU works. A row that ends on an end token or stop string is found one
step late: its extra token is discarded (never emitted, never counted) and its
slot freed then. Anything that changes the batch first settles the step in
flight and the round runs serially, as does any other sampling.

The batch itself lives behind the `Batcher` interface: `SlotBatcher` (lean
runner, slot KV cache, CUDA graphs) or `StackedBatcher` (the model's own
forward over stacked `DynamicCache`s). This module knows nothing of asyncio:
it is plain threading, so the event loop is never blocked by the model. It is
started and stopped by `TransformersEngine`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch

from ziggurat.model.engine import (
    FinishReason,
    GenerationEnd,
    GenerationEvent,
    TextDelta,
    TokenLogprob,
    Usage,
)
from ziggurat.model.engines.transformers_batching import Batcher, attention_backends
from ziggurat.model.engines.transformers_runner_staging import StagedTokens
from ziggurat.model.engines.transformers_sampling import SamplingSettings, TokenChoice, choose_tokens
from ziggurat.model.engines.transformers_text import OutputText
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

MODEL_FAILED = "The model failed while generating this answer."


@dataclass(slots=True, eq=False)
class SequenceState:
    """One request inside the decode loop. Only `is_cancelled` is written from another thread."""

    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingSettings
    text: OutputText
    emit: Callable[[GenerationEvent], object]
    stop_token_ids: frozenset[int] = frozenset()
    token_text: Callable[[int], str] | None = None
    """Decodes one token on its own, for logprobs (set when the request asked for them)."""
    adapter_slot: int = -1
    """The LoRA adapter this sequence decodes with (`transformers_lora`); -1: the base model."""
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    is_cancelled: bool = False

    def usage(self) -> Usage:
        return Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.output_ids))


class OverlapBatcher(Batcher, Protocol):
    """A `Batcher` that can keep greedy tokens on the device (`SlotBatcher`)."""

    overlap: bool

    def decode_step(self, *, chained: bool = False) -> tuple[list[Any], torch.Tensor | None]: ...

    def stage_greedy(self, logits: torch.Tensor) -> StagedTokens: ...


@dataclass(slots=True)
class InFlight:
    """A decode step whose tokens are still on their way to the host."""

    rows: list[SequenceState]
    """The sequences whose tokens count; rows found finished meanwhile are left out."""
    picks: list[int]
    """Each row's index among the staged tokens."""
    staged: StagedTokens


def overlaps(sequence: SequenceState) -> bool:
    """Whether this sequence's tokens can be chosen on the device alone (a plain argmax)."""
    settings = sequence.sampling
    return settings.is_greedy and not settings.has_penalties and settings.top_logprobs is None


class DecodeLoop:
    """Continuous batching on the thread that calls `run`, over a `Batcher`.

    `submit`, `cancel` and `stop` may be called from any thread. Every submitted
    sequence that is not cancelled receives exactly one `GenerationEnd`, also
    when the loop stops (`cancelled`) or the model fails (`error`).
    """

    def __init__(self, *, batcher: Batcher, eos_token_ids: frozenset[int]) -> None:
        self._batcher = batcher
        self._eos_token_ids = eos_token_ids
        self._condition = threading.Condition()
        self._waiting: deque[SequenceState] = deque()
        self._sequences: list[SequenceState] = []
        self._is_stopping = False
        self.max_batch_observed = 0
        self.dropped_cancelled_count = 0
        # Read by other threads for metrics (plain values, written once per round): sequences in
        # the latest decode step, sequences past their prompt, the KV budget in use, and the
        # tokens generated so far (a counter; rates come from its derivative).
        self.last_batch_size = 0
        self.decoding_count = 0
        self.kv_cache_usage = 0.0
        self.generated_tokens = 0
        self._inflight: InFlight | None = None

    @property
    def active_count(self) -> int:
        """Sequences past their prompt, decoding in the running batch."""
        return self.decoding_count

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    def submit(self, sequence: SequenceState) -> None:
        with self._condition:
            if self._is_stopping:
                self._end(sequence, "cancelled")
                return
            self._waiting.append(sequence)
            self._condition.notify()

    def cancel(self, sequence: SequenceState) -> None:
        """Mark a sequence cancelled; the loop drops it before its next step, without emitting."""
        sequence.is_cancelled = True
        with self._condition:
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._is_stopping = True
            self._condition.notify()

    def run(self) -> None:
        """The thread's body: returns after `stop`, ending every remaining sequence."""
        reason: FinishReason = "cancelled"
        try:
            with torch.inference_mode(), attention_backends():
                while self._next_round():
                    pass
        except Exception:
            # The thread's supervisor: a bug here must fail the requests loudly, not hang them.
            log.exception("decode_loop_crashed")
            reason = "error"
        finally:
            with self._condition:
                self._is_stopping = True
                leftovers = [*self._sequences, *self._waiting]
                self._waiting.clear()
            self._sequences = []
            self._inflight = None
            self._batcher.clear()
            self.last_batch_size = self.decoding_count = 0
            self.kv_cache_usage = 0.0
            for sequence in leftovers:
                self._end(sequence, reason, MODEL_FAILED if reason == "error" else None)

    def _next_round(self) -> bool:
        with self._condition:
            while not self._is_stopping and not self._waiting and not self._sequences:
                self._condition.wait()
            if self._is_stopping:
                return False
            admitted = self._take_waiting()
        for sequence in admitted:
            self._batcher.add(sequence)
            self._sequences.append(sequence)
        if self._inflight is not None and not self._can_chain(self._inflight):
            self._flush()
        self._drop_cancelled()
        self._prefill()
        self._publish()
        self.last_batch_size = self._batcher.decoding_count
        self._decode()
        self._publish()
        return True

    def _publish(self) -> None:
        self.decoding_count = self._batcher.decoding_count
        self.kv_cache_usage = self._batcher.kv_cache_usage
        self.max_batch_observed = max(self.max_batch_observed, self.decoding_count)

    def _take_waiting(self) -> list[SequenceState]:
        free = self._batcher.room
        admitted: list[SequenceState] = []
        while self._waiting and len(admitted) < free:
            sequence = self._waiting.popleft()
            if sequence.is_cancelled:
                self.dropped_cancelled_count += 1
            else:
                admitted.append(sequence)
        return admitted

    def _drop_cancelled(self) -> None:
        cancelled = [sequence for sequence in self._sequences if sequence.is_cancelled]
        if not cancelled:
            return
        self.dropped_cancelled_count += len(cancelled)
        self._batcher.remove(cancelled)
        self._forget(cancelled)

    def _prefill(self) -> None:
        try:
            done, logits = self._batcher.prefill_step()
        except RuntimeError:
            failed = self._batcher.abort_prefill()
            log.exception("prefill_failed", request_ids=[sequence.request_id for sequence in failed])
            self._forget(failed)
            for sequence in failed:
                self._end(sequence, "error", MODEL_FAILED)
            return
        if logits is not None:
            tokens, finished = self._choose(done, logits)
            self._batcher.commit_prefill(done, tokens, finished)

    def _decode(self) -> None:
        inflight = self._inflight
        try:
            if inflight is not None:
                self._decode_chained(inflight)
                return
            rows, logits = self._batcher.decode_step()
        except RuntimeError:
            log.exception("decode_step_failed", batch_size=self.last_batch_size)
            self._inflight = None
            failed = [sequence for sequence in self._sequences]
            self._batcher.clear()
            self._forget(failed)
            for sequence in failed:
                self._end(sequence, "error", MODEL_FAILED)
            return
        if logits is None:
            return
        if getattr(self._batcher, "overlap", False) and all(overlaps(row) for row in rows):
            staged = cast(OverlapBatcher, self._batcher).stage_greedy(logits)
            self._inflight = InFlight(rows, list(range(len(rows))), staged)
            return
        tokens, finished = self._choose(rows, logits)
        self._batcher.commit_decode(rows, tokens, finished)

    def _can_chain(self, inflight: InFlight) -> bool:
        """Whether the next step may run on the in-flight step's device tokens: the batch is
        exactly its rows, none cancelled, and none reaches its token limit with that step."""
        return len(self._sequences) == len(inflight.rows) and all(
            not row.is_cancelled and len(row.output_ids) + 2 <= row.max_new_tokens for row in inflight.rows
        )

    def _decode_chained(self, inflight: InFlight) -> None:
        """Launch the next step, then settle the one in flight while the GPU runs it."""
        batcher = cast(OverlapBatcher, self._batcher)
        rows, logits = batcher.decode_step(chained=True)
        assert rows == inflight.rows and logits is not None  # guaranteed by _can_chain
        staged = batcher.stage_greedy(logits)
        self._inflight = None
        finished = self._settle(inflight)
        kept = [index for index, is_finished in enumerate(finished) if not is_finished]
        if kept:
            self._inflight = InFlight([rows[index] for index in kept], kept, staged)

    def _flush(self) -> None:
        """Settle the step in flight before the batch changes; cancelled rows' tokens are dropped."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            self._settle(inflight)

    def _settle(self, inflight: InFlight) -> list[bool]:
        """Read the in-flight step's tokens, emit them, commit them; which rows finished."""
        staged = inflight.staged.tokens()
        rows = [row for row in inflight.rows if not row.is_cancelled]
        if len(rows) < len(inflight.rows):
            live = [index for index, row in enumerate(inflight.rows) if not row.is_cancelled]
            tokens = [staged[inflight.picks[index]] for index in live]
        else:
            tokens = [staged[index] for index in inflight.picks]
        finished = self._settle_tokens(rows, [TokenChoice(token) for token in tokens])
        self._batcher.commit_decode(rows, tokens, finished)
        by_row = dict(zip(rows, finished, strict=True))
        return [by_row.get(row, True) for row in inflight.rows]

    def _choose(
        self, sequences: Sequence[SequenceState], logits: torch.Tensor
    ) -> tuple[list[int], list[bool]]:
        """Pick each row's token, emit its text; returns the tokens and which sequences finished."""
        choices = choose_tokens(logits, sequences)
        return [choice.token for choice in choices], self._settle_tokens(sequences, choices)

    def _settle_tokens(
        self, sequences: Sequence[SequenceState], choices: Sequence[TokenChoice]
    ) -> list[bool]:
        self.generated_tokens += len(choices)
        finished = [self._accept(row, choice) for row, choice in zip(sequences, choices, strict=True)]
        self._forget(
            [sequence for sequence, is_finished in zip(sequences, finished, strict=True) if is_finished]
        )
        return finished

    def _forget(self, sequences: Sequence[SequenceState]) -> None:
        if sequences:
            gone = set(sequences)
            self._sequences = [sequence for sequence in self._sequences if sequence not in gone]

    def _accept(self, sequence: SequenceState, choice: TokenChoice) -> bool:
        """Record one generated token, emit its text; returns whether the sequence has finished."""
        token = choice.token
        sequence.output_ids.append(token)
        if token in self._eos_token_ids or token in sequence.stop_token_ids:
            # An end token is never shown, so it gets no logprob entry either.
            text, _ = sequence.text.finish()
            self._send(sequence, text)
            self._end(sequence, "stop")
            return True
        _record_logprob(sequence, choice)
        text, is_stopped = sequence.text.push(token)
        self._send(sequence, text)
        if is_stopped:
            self._end(sequence, "stop")
            return True
        if len(sequence.output_ids) >= sequence.max_new_tokens:
            text, is_stopped = sequence.text.finish()
            self._send(sequence, text)
            self._end(sequence, "stop" if is_stopped else "length")
            return True
        return False

    def _send(self, sequence: SequenceState, text: str) -> None:
        # Logprobs ride on the delta that carries their tokens' text; text held back (half a
        # character, a possible stop string) takes its tokens' logprobs along when it is sent.
        if text:
            logprobs = tuple(sequence.pending_logprobs) if sequence.token_text is not None else None
            sequence.pending_logprobs.clear()
            self._emit(sequence, TextDelta(text, logprobs))

    def _end(self, sequence: SequenceState, reason: FinishReason, error: str | None = None) -> None:
        self._emit(sequence, GenerationEnd(finish_reason=reason, usage=sequence.usage(), error=error))

    def _emit(self, sequence: SequenceState, event: GenerationEvent) -> None:
        try:
            sequence.emit(event)
        except RuntimeError:
            # The consumer's event loop is closed: nobody is listening any more.
            sequence.is_cancelled = True


def _record_logprob(sequence: SequenceState, choice: TokenChoice) -> None:
    decode = sequence.token_text
    if decode is None or choice.logprob is None:
        return
    top = tuple((decode(token), logprob) for token, logprob in choice.top)
    sequence.pending_logprobs.append(TokenLogprob(decode(choice.token), choice.logprob, top))
