"""The lean runner's side of the decode loop: slots, chunked prefill and decode rows.

Each round the loop asks for one prefill step and then one decode step. The
prefill step takes at most `chunk_tokens` prompt tokens, from the sequences
still prefilling in arrival order (a long prompt is split across rounds, short
ones are packed together), so a decode step of the running batch never waits
behind more than one chunk however long the new prompts are. A sequence holds
its slot from admission (`add`) to removal, so admission is exactly "is a slot
free" (`room`).

While the batch is decode-light (several prompts waiting, few sequences decoding),
a round takes up to `RAMP_FACTOR` chunks, scaled by the waiting share: the few
decoders lose little by waiting one bigger prefill, and a burst of requests
reaches a full decode batch in a few rounds instead of one per chunk (256
prompts of 128 tokens took 64 rounds at 512 tokens a round, each with a decode
step of a partly empty batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ziggurat.model.engines.transformers_batching import Batcher, StackedBatcher
from ziggurat.model.engines.transformers_kv import (
    GIB,
    SlotKVCache,
    bytes_per_token,
    default_budget,
    plan_slots,
)
from ziggurat.model.engines.transformers_runner import LlamaRunner, PrefillChunk, refusal
from ziggurat.model.engines.transformers_runner_staging import StagedTokens
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

RAMP_FACTOR = 8
"""At most this many chunks' tokens in one prefill round, when nothing is decoding yet."""


@dataclass(slots=True)
class _SlotState:
    slot: int
    prefilled: int = 0
    last_token: int | None = None
    """The token the next decode step feeds; None while the prompt is still being prefilled."""


class SlotBatcher:
    """A `Batcher` over a `LlamaRunner` and its slot KV cache."""

    def __init__(self, runner: LlamaRunner, *, chunk_tokens: int) -> None:
        self._runner = runner
        self._cache = runner.cache
        self._chunk_tokens = chunk_tokens
        self._states: dict[Any, _SlotState] = {}
        self._in_prefill: list[Any] = []
        self.lora: Any = None
        """A `transformers_lora.LoraSet` when adapters are served: told each forward's rows."""
        self.overlap = runner.cache.data.device.type == "cuda"
        """Whether the decode loop may launch the next step before reading this one's tokens
        (`DecodeLoop`; greedy rows only). On by default on CUDA; tests turn it on on CPU."""

    @property
    def room(self) -> int:
        return self._cache.free_count

    @property
    def decoding_count(self) -> int:
        return sum(1 for state in self._states.values() if state.last_token is not None)

    @property
    def kv_cache_usage(self) -> float:
        return self._cache.usage

    def add(self, sequence: Any) -> None:
        self._states[sequence] = _SlotState(slot=self._cache.allocate())

    def prefill_budget(self) -> int:
        """Prompt tokens for the next round: `chunk_tokens`, up to `RAMP_FACTOR` times that for a
        burst of prompts, scaled by their share of the batch. One prompt alone, however long, is
        always cut into `chunk_tokens` pieces."""
        prefilling = sum(1 for state in self._states.values() if state.last_token is None)
        if prefilling < 2:
            return self._chunk_tokens
        decoding = len(self._states) - prefilling
        factor = max(1, RAMP_FACTOR * prefilling // (prefilling + decoding))
        return self._chunk_tokens * factor

    def prefill_step(self) -> tuple[list[Any], torch.Tensor | None]:
        budget = self.prefill_budget()
        chunks: list[PrefillChunk] = []
        owners: list[Any] = []
        for sequence, state in self._states.items():
            if state.last_token is not None:
                continue
            prompt = sequence.prompt_ids
            take = min(len(prompt) - state.prefilled, budget)
            if take <= 0:
                break
            end = state.prefilled + take
            chunks.append(
                PrefillChunk(state.slot, state.prefilled, prompt[state.prefilled : end], end == len(prompt))
            )
            owners.append(sequence)
            budget -= take
        if not chunks:
            return [], None
        self._in_prefill = owners
        if self.lora is not None:
            lengths = [len(chunk.tokens) for chunk in chunks]
            self.lora.select([owner.adapter_slot for owner in owners], lengths)
        logits = self._runner.prefill(chunks)
        self._in_prefill = []
        done: list[Any] = []
        for sequence, chunk in zip(owners, chunks, strict=True):
            state = self._states[sequence]
            state.prefilled += len(chunk.tokens)
            self._cache.lengths[state.slot] = state.prefilled
            if chunk.wants_logits:
                done.append(sequence)
        return done, logits if done else None

    def abort_prefill(self) -> list[Any]:
        failed, self._in_prefill = self._in_prefill, []
        self.remove(failed)
        return failed

    def commit_prefill(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None:
        self._commit(sequences, tokens, finished)

    def decode_step(self, *, chained: bool = False) -> tuple[list[Any], torch.Tensor | None]:
        """One step of every decoding sequence. `chained`: feed the tokens that `stage_greedy`
        left on the device (the host's `last_token`s are one step behind)."""
        rows = [sequence for sequence, state in self._states.items() if state.last_token is not None]
        if not rows:
            return [], None
        states = [self._states[sequence] for sequence in rows]
        slots = [state.slot for state in states]
        positions = [self._cache.lengths[slot] for slot in slots]
        tokens = [state.last_token or 0 for state in states]
        if self.lora is not None:
            by_slot = [-1] * self._cache.slots
            for sequence, slot in zip(rows, slots, strict=True):
                by_slot[slot] = sequence.adapter_slot
            self.lora.select_by_row(by_slot)
        logits = self._runner.decode(slots, positions, None if chained else tokens)
        for slot in slots:
            self._cache.lengths[slot] += 1
        return rows, logits

    def stage_greedy(self, logits: torch.Tensor) -> StagedTokens:
        """The argmax of the latest decode step, kept on the device as the next step's input and
        copied to the host asynchronously."""
        return self._runner.feed_greedy(logits)

    def commit_decode(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None:
        self._commit(sequences, tokens, finished)

    def remove(self, sequences: Sequence[Any]) -> None:
        for sequence in sequences:
            state = self._states.pop(sequence, None)
            if state is not None:
                self._cache.release(state.slot)

    def clear(self) -> None:
        self.remove(list(self._states))

    def _commit(self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]) -> None:
        for sequence, token, is_finished in zip(sequences, tokens, finished, strict=True):
            if is_finished:
                self.remove([sequence])
            else:
                self._states[sequence].last_token = token


@dataclass(slots=True, frozen=True)
class BatchPlan:
    """The batcher the engine serves with, and how many sequences it runs at once."""

    batcher: Batcher
    capacity: int
    path: str
    """`runner` (lean runner, slot KV cache) or `hf` (the model's own forward)."""


def make_batcher(
    model: Any,
    *,
    device: torch.device,
    mode: str,
    max_batch_size: int,
    context_length: int,
    kv_cache_gib: float | None,
    chunk_tokens: int,
    cuda_graphs: bool,
) -> BatchPlan:
    """The lean runner where `mode` allows it and the model is Llama-shaped, else the HF path."""
    reason = "engine.runner is hf" if mode == "hf" else refusal(model, context_length)
    if reason is not None:
        log.info("fast_runner_not_used", reason=reason)
        stacked = StackedBatcher(
            model=model, device=device, max_batch_size=max_batch_size, context_length=context_length
        )
        return BatchPlan(batcher=stacked, capacity=max_batch_size, path="hf")
    config = model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    layers = int(config.num_hidden_layers)
    dtype = next(model.parameters()).dtype
    token_bytes = bytes_per_token(layers, kv_heads, head_dim, dtype)
    budget = int(kv_cache_gib * GIB) if kv_cache_gib is not None else default_budget(device)
    slots = plan_slots(
        token_bytes=token_bytes, max_slots=max_batch_size, max_len=context_length, budget_bytes=budget
    )
    cache = SlotKVCache(
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        slots=slots,
        max_len=context_length,
        dtype=dtype,
        device=device,
    )
    runner = LlamaRunner(model, cache, use_graphs=cuda_graphs)
    log.info(
        "fast_runner_ready",
        slots=slots,
        max_len=context_length,
        kv_cache_gib=round(cache.data.numel() * dtype.itemsize / GIB, 3),
        cuda_graphs=cuda_graphs and device.type == "cuda",
    )
    return BatchPlan(batcher=SlotBatcher(runner, chunk_tokens=chunk_tokens), capacity=slots, path="runner")
