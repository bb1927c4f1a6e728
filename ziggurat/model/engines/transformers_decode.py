"""The decode loop of the transformers engine: one thread that owns the model and serves every request.

Requests wait in a queue. Between decode steps the loop admits as many as there
are free slots (prefilling each, see `transformers_batching`), runs one forward
pass for the whole batch, picks one token per sequence, turns it into text and
hands the resulting events to each request's `emit` callback, which the engine
points at its event loop (`call_soon_threadsafe`). A sequence leaves the batch
the step it finishes or is found cancelled, which frees its slot within one step.

This module knows nothing of asyncio: it is plain threading, so the event loop
is never blocked by the model. It is started and stopped by `TransformersEngine`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ziggurat.model.engine import FinishReason, GenerationEnd, GenerationEvent, TextDelta, Usage
from ziggurat.model.engines.transformers_batching import (
    RunningBatch,
    attention_backends,
    cache_keyword,
    can_stack,
    choose_tokens,
    prefill,
)
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
    temperature: float
    top_p: float
    generator: torch.Generator | None
    text: OutputText
    emit: Callable[[GenerationEvent], object]
    output_ids: list[int] = field(default_factory=list)
    is_cancelled: bool = False

    def usage(self) -> Usage:
        return Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.output_ids))


class DecodeLoop:
    """Continuous batching of up to `max_batch_size` sequences on the thread that calls `run`.

    `submit`, `cancel` and `stop` may be called from any thread. Every submitted
    sequence that is not cancelled receives exactly one `GenerationEnd`, also
    when the loop stops (`cancelled`) or the model fails (`error`).
    """

    def __init__(
        self, *, model: Any, device: torch.device, eos_token_ids: frozenset[int], max_batch_size: int
    ) -> None:
        self._model = model
        self._device = device
        self._eos_token_ids = eos_token_ids
        self._max_batch_size = max_batch_size
        self._condition = threading.Condition()
        self._waiting: deque[SequenceState] = deque()
        self._cache_keyword = cache_keyword(model)
        self._batch = RunningBatch(device, self._cache_keyword)
        self._sequences: list[SequenceState] = []
        self._can_stack: bool | None = None
        self._is_stopping = False
        self.max_batch_observed = 0
        self.dropped_cancelled_count = 0
        # Read by other threads for metrics (plain ints, written once per round): sequences in the
        # latest decode step, and the KV-cache positions the batch holds (rows x length, padding included).
        self.last_batch_size = 0
        self.cached_positions = 0

    @property
    def active_count(self) -> int:
        """Sequences in the running batch (each holds a slot)."""
        return len(self._sequences)

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
            self._batch.clear()
            self.last_batch_size = self.cached_positions = 0
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
            self._admit(sequence)
        self._drop_cancelled()
        self.last_batch_size = len(self._sequences)
        if self._sequences:
            self._step()
        self.cached_positions = self._batch.cached_positions
        return True

    def _take_waiting(self) -> list[SequenceState]:
        if self._can_stack:
            free = self._max_batch_size - len(self._sequences)
        else:
            # Until the first prefill shows the cache layout, and for layouts that cannot be
            # stacked, sequences run one at a time.
            free = 0 if self._sequences else 1
        admitted: list[SequenceState] = []
        while self._waiting and len(admitted) < free:
            sequence = self._waiting.popleft()
            if sequence.is_cancelled:
                self.dropped_cancelled_count += 1
            else:
                admitted.append(sequence)
        return admitted

    def _admit(self, sequence: SequenceState) -> None:
        try:
            logits, cache = prefill(self._model, sequence.prompt_ids, self._device, self._cache_keyword)
        except RuntimeError:
            log.exception("prefill_failed", request_id=sequence.request_id)
            self._end(sequence, "error", MODEL_FAILED)
            return
        if self._can_stack is None:
            self._can_stack = can_stack(cache)
            if not self._can_stack:
                log.warning("continuous_batching_unsupported", reason="cache layout cannot be stacked")
        token = choose_tokens(logits, [sequence.temperature], [sequence.top_p], [sequence.generator])[0]
        if self._accept(sequence, token):
            return
        self._batch.add(cache, len(sequence.prompt_ids), token)
        self._sequences.append(sequence)
        self.max_batch_observed = max(self.max_batch_observed, len(self._sequences))

    def _drop_cancelled(self) -> None:
        rows = [row for row, sequence in enumerate(self._sequences) if not sequence.is_cancelled]
        if len(rows) == len(self._sequences):
            return
        self.dropped_cancelled_count += len(self._sequences) - len(rows)
        self._keep(rows)

    def _step(self) -> None:
        try:
            logits = self._batch.forward(self._model)
        except RuntimeError:
            log.exception("decode_step_failed", batch_size=len(self._sequences))
            failed, self._sequences = self._sequences, []
            self._batch.clear()
            for sequence in failed:
                self._end(sequence, "error", MODEL_FAILED)
            return
        tokens = choose_tokens(
            logits,
            [sequence.temperature for sequence in self._sequences],
            [sequence.top_p for sequence in self._sequences],
            [sequence.generator for sequence in self._sequences],
        )
        self._batch.set_last_tokens(tokens)
        rows = [
            row
            for row, (sequence, token) in enumerate(zip(self._sequences, tokens, strict=True))
            if not self._accept(sequence, token)
        ]
        self._keep(rows)

    def _keep(self, rows: Sequence[int]) -> None:
        self._batch.keep(rows)
        self._sequences = [self._sequences[row] for row in rows]

    def _accept(self, sequence: SequenceState, token: int) -> bool:
        """Record one generated token, emit its text; returns whether the sequence has finished."""
        sequence.output_ids.append(token)
        if token in self._eos_token_ids:
            text, _ = sequence.text.finish()
            self._send(sequence, text)
            self._end(sequence, "stop")
            return True
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
        if text:
            self._emit(sequence, TextDelta(text))

    def _end(self, sequence: SequenceState, reason: FinishReason, error: str | None = None) -> None:
        self._emit(sequence, GenerationEnd(finish_reason=reason, usage=sequence.usage(), error=error))

    def _emit(self, sequence: SequenceState, event: GenerationEvent) -> None:
        try:
            sequence.emit(event)
        except RuntimeError:
            # The consumer's event loop is closed: nobody is listening any more.
            sequence.is_cancelled = True
