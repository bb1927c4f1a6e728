"""The running batch of the transformers engine: many sequences, one KV cache, one forward pass per step.

Sequences join and leave the batch between decode steps (continuous batching).
A new sequence is prefilled alone, so its prompt is never padded and its first
token is exactly what it would be without other traffic. Its KV cache is then
left-padded to the batch's length and stacked under the others; a 2-D attention
mask hides the padding and explicit position ids keep each row's positions its
own, so each row decodes as if it were alone (up to floating-point rounding
order). Rows that finish are cut out, and columns that have become padding in
every row are trimmed, so the cache stays as long as the longest live sequence.

This is the fallback path for models the lean runner (`transformers_runner`)
refuses; `StackedBatcher` adapts it to the decode loop's batcher interface.
Not here: paged attention, chunked prefill, prefix sharing. Caches made of
anything but plain `DynamicLayer`s (sliding-window or linear-attention layers)
cannot be stacked row-wise; `can_stack` tells the caller to run those models
one sequence at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, cast

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

Model = Any


class Batcher(Protocol):
    """What the decode loop needs from a batch backend; sequences are the loop's own objects.

    A sequence is added (it holds a slot), prefilled over one or more
    `prefill_step`s, then decodes one token per `decode_step` until it is
    committed as finished or removed. Logits rows follow the order of the
    sequences returned with them.
    """

    @property
    def room(self) -> int: ...

    @property
    def decoding_count(self) -> int: ...

    @property
    def kv_cache_usage(self) -> float: ...

    def add(self, sequence: Any) -> None: ...

    def prefill_step(self) -> tuple[list[Any], torch.Tensor | None]: ...

    def abort_prefill(self) -> list[Any]: ...

    def commit_prefill(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None: ...

    def decode_step(self) -> tuple[list[Any], torch.Tensor | None]: ...

    def commit_decode(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None: ...

    def remove(self, sequences: Sequence[Any]) -> None: ...

    def clear(self) -> None: ...


def prefill(
    model: Model, prompt_ids: Sequence[int], device: torch.device, cache_keyword: str
) -> tuple[torch.Tensor, DynamicCache]:
    """Run the prompt; returns the logits for the first new token `(1, vocab)` and the filled cache."""
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    length = input_ids.shape[1]
    cache = DynamicCache(config=model.config)
    output = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        position_ids=torch.arange(length, device=device).unsqueeze(0),
        use_cache=True,
        logits_to_keep=1,
        **{cache_keyword: cache},
    )
    logits: torch.Tensor = output.logits[:, -1, :]
    return logits.float(), cache


def attention_backends() -> AbstractContextManager[None]:
    """The SDPA kernels to decode with: everything but cuDNN's.

    cuDNN attention builds and caches a graph per new sequence length, and decoding
    makes a new length every step: on an H100 that cost ~4 ms per layer per step
    (5x slower decoding) until every length had been seen. The setting is global
    to the process while the decode loop runs; nothing else here runs attention.
    """
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def cache_keyword(model: Model) -> str:
    """`cache` in recent transformers 5 releases, `past_key_values` before the rename."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def can_stack(cache: DynamicCache) -> bool:
    """Whether rows of this cache layout can be padded and stacked with others."""
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    # Only caches that passed `can_stack` reach the batch, so every layer is a DynamicLayer.
    return [cast(DynamicLayer, layer) for layer in cache.layers]


def _key_values(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.keys is None or layer.values is None:
        raise RuntimeError("A KV cache layer in the running batch is empty.")
    return layer.keys, layer.values


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RunningBatch:
    """Rows of live sequences, with their stacked KV cache, padding mask, positions and last tokens.

    Invariants: `mask.shape == (rows, cache length)`; row i's real tokens are the
    ones where `mask[i] == 1`, always a suffix of the row; `positions[i]` is the
    position id of `last_tokens[i]`, the token the next step feeds.
    """

    def __init__(self, device: torch.device, cache_keyword: str) -> None:
        self._device = device
        self._cache_keyword = cache_keyword
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self._positions = torch.zeros((0,), dtype=torch.long, device=device)
        self._last_tokens = torch.zeros((0,), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return int(self._mask.shape[0])

    @property
    def cached_positions(self) -> int:
        """Positions held per layer across all rows, padding included (shapes only: no device sync)."""
        return int(self._mask.shape[0] * self._mask.shape[1])

    def add(self, cache: DynamicCache, prompt_length: int, first_token: int) -> None:
        """Stack one prefilled sequence (cache of `prompt_length` tokens) as the last row."""
        mask = torch.ones((1, prompt_length), dtype=torch.long, device=self._device)
        position = torch.tensor([prompt_length], dtype=torch.long, device=self._device)
        token = torch.tensor([first_token], dtype=torch.long, device=self._device)
        if self._cache is None or len(self) == 0:
            self._cache, self._mask, self._positions, self._last_tokens = cache, mask, position, token
            return
        length = max(int(self._mask.shape[1]), prompt_length)
        for layer, new_layer in zip(_layers(self._cache), _layers(cache), strict=True):
            keys, values = _key_values(layer)
            new_keys, new_values = _key_values(new_layer)
            layer.keys = torch.cat([_left_pad(keys, length, 2), _left_pad(new_keys, length, 2)])
            layer.values = torch.cat([_left_pad(values, length, 2), _left_pad(new_values, length, 2)])
        self._mask = torch.cat([_left_pad(self._mask, length, 1), _left_pad(mask, length, 1)])
        self._positions = torch.cat([self._positions, position])
        self._last_tokens = torch.cat([self._last_tokens, token])

    def forward(self, model: Model) -> torch.Tensor:
        """One decode step for every row; returns next-token logits `(rows, vocab)` in float32."""
        mask = torch.cat([self._mask, self._mask.new_ones((len(self), 1))], dim=1)
        output = model(
            input_ids=self._last_tokens.unsqueeze(1),
            attention_mask=mask,
            position_ids=self._positions.unsqueeze(1),
            use_cache=True,
            **{self._cache_keyword: self._cache},
        )
        self._mask = mask
        self._positions = self._positions + 1
        logits: torch.Tensor = output.logits[:, -1, :]
        return logits.float()

    def set_last_tokens(self, tokens: Sequence[int]) -> None:
        self._last_tokens = torch.tensor(list(tokens), dtype=torch.long, device=self._device)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (in this order), then trim columns that are padding in every row."""
        if len(rows) == len(self):
            return
        if not rows:
            self.clear()
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._device)
        self._mask = self._mask.index_select(0, index)
        self._positions = self._positions.index_select(0, index)
        self._last_tokens = self._last_tokens.index_select(0, index)
        padding = int((self._mask.cumsum(dim=1) == 0).sum(dim=1).min())
        self._mask = self._mask[:, padding:]
        for layer in _layers(self._cache) if self._cache is not None else []:
            keys, values = _key_values(layer)
            layer.keys = keys.index_select(0, index)[:, :, padding:, :]
            layer.values = values.index_select(0, index)[:, :, padding:, :]

    def clear(self) -> None:
        self._cache = None
        self._mask = self._mask.new_zeros((0, 0))
        self._positions = self._positions.new_zeros((0,))
        self._last_tokens = self._last_tokens.new_zeros((0,))


class StackedBatcher:
    """The HF-forward path as a `Batcher`: each new sequence is prefilled alone, then stacked.

    KV-cache use is the padded cache's positions over what `max_batch_size`
    sequences of the full context would hold.
    """

    def __init__(
        self, *, model: Model, device: torch.device, max_batch_size: int, context_length: int
    ) -> None:
        self._model = model
        self._device = device
        self._max_batch_size = max_batch_size
        self._context_length = context_length
        self._cache_keyword = cache_keyword(model)
        self._batch = RunningBatch(device, self._cache_keyword)
        self._pending: list[Any] = []
        self._prefilled: dict[Any, DynamicCache] = {}
        self._rows: list[Any] = []
        self._can_stack: bool | None = None
        self.lora: Any = None
        """A `transformers_lora.LoraSet` when adapters are served: told each forward's rows."""

    @property
    def room(self) -> int:
        held = len(self._pending) + len(self._prefilled) + len(self._rows)
        if self._can_stack:
            return self._max_batch_size - held
        # Until the first prefill shows the cache layout, and for layouts that cannot be
        # stacked, sequences run one at a time.
        return 0 if held else 1

    @property
    def decoding_count(self) -> int:
        return len(self._rows)

    @property
    def kv_cache_usage(self) -> float:
        budget = self._max_batch_size * self._context_length
        return min(1.0, self._batch.cached_positions / budget) if budget else 0.0

    def add(self, sequence: Any) -> None:
        self._pending.append(sequence)

    def prefill_step(self) -> tuple[list[Any], torch.Tensor | None]:
        done: list[Any] = []
        rows: list[torch.Tensor] = []
        while self._pending:
            sequence = self._pending[0]
            if self.lora is not None:
                self.lora.select([sequence.adapter_slot])
            logits, cache = prefill(self._model, sequence.prompt_ids, self._device, self._cache_keyword)
            self._pending.pop(0)
            if self._can_stack is None:
                self._can_stack = can_stack(cache)
            self._prefilled[sequence] = cache
            done.append(sequence)
            rows.append(logits)
        return done, torch.cat(rows) if rows else None

    def abort_prefill(self) -> list[Any]:
        """The sequence whose prefill failed (the first pending one), removed."""
        return [self._pending.pop(0)] if self._pending else []

    def commit_prefill(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None:
        for sequence, token, is_finished in zip(sequences, tokens, finished, strict=True):
            cache = self._prefilled.pop(sequence)
            if not is_finished:
                self._batch.add(cache, len(sequence.prompt_ids), token)
                self._rows.append(sequence)

    def decode_step(self) -> tuple[list[Any], torch.Tensor | None]:
        if not self._rows:
            return [], None
        if self.lora is not None:
            self.lora.select([sequence.adapter_slot for sequence in self._rows])
        return list(self._rows), self._batch.forward(self._model)

    def commit_decode(
        self, sequences: Sequence[Any], tokens: Sequence[int], finished: Sequence[bool]
    ) -> None:
        self._batch.set_last_tokens(tokens)
        self._keep([row for row, is_finished in enumerate(finished) if not is_finished])

    def remove(self, sequences: Sequence[Any]) -> None:
        gone = set(sequences)
        self._pending = [sequence for sequence in self._pending if sequence not in gone]
        for sequence in gone:
            self._prefilled.pop(sequence, None)
        self._keep([row for row, sequence in enumerate(self._rows) if sequence not in gone])

    def clear(self) -> None:
        self._pending, self._rows = [], []
        self._prefilled.clear()
        self._batch.clear()

    def _keep(self, rows: Sequence[int]) -> None:
        self._batch.keep(rows)
        self._rows = [self._rows[row] for row in rows]
