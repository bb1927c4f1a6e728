"""A lean forward pass for Llama-family decoders over a slot KV cache, with CUDA graphs for decode.

Why our own runner rather than the model's `forward` or transformers' built-in
continuous batching (`generate_batch` / `ContinuousBatchingManager`): an eager
Hugging Face forward is launch-bound on a GPU (hundreds of small kernels, each
with Python and dispatcher overhead, for one token), so batch-1 decode of a 1B
model runs far below the memory-bandwidth floor; and every decode step with a
`DynamicCache` re-concatenates the cache. Here the weights are the loaded HF
model's own modules, but the step is ours: keys and values are written in place
into a preallocated slot cache (`transformers_kv`), positions are per row, and
the whole decode step (every layer, the final norm and the LM head) is captured
once per (batch bucket, length bucket) as a CUDA graph and replayed, so one step
costs one launch. transformers' continuous batching was measured against this
in `bench/engine_throughput.py` (see bench/RESULTS.md); its manager runs its own
thread and request queue with a paged cache and no streaming per-token events
we could map onto our cancellation and chunked-prefill guarantees, so we keep
the scheduler ours and make the forward fast.

Supported: `llama`, `mistral` and `qwen2` model types (RMSNorm, rotary
embeddings of any HF rope type incl. llama3 scaling, since the model's own
`rotary_emb` computes them; grouped-query attention; SwiGLU MLP; biases where
the checkpoint has them). `refusal` names why any other model falls back to the
HF-forward path. Prefill is eager and batched over several sequences' chunks.

Per layer, the fused path (`transformers_runner_layers`: q/k/v and gate/up
weights concatenated at load, the layer's math as two pure functions of
tensors, `torch.compile`d on CUDA and captured inside our graphs) runs whenever
no module of the model has forward hooks. While LoRA adapters are loaded
(`transformers_lora` hooks the modules), every step takes the module path
instead: each weight through its own module so the hooks add their deltas, and
no CUDA graph (a graph would replay the deltas of its capture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from ziggurat.model.engines import transformers_triton
from ziggurat.model.engines.transformers_kv import SlotKVCache
from ziggurat.model.engines.transformers_runner_layers import (
    LayerModules,
    MaybeCompiled,
    attention_inputs,
    attention_output_and_mlp,
    decode_attention_and_mlp,
    decode_inputs,
    norm,
    prepare_layer,
    project,
    project_all,
    rotate,
)
from ziggurat.model.engines.transformers_runner_staging import HostStaging, StagedTokens

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MIN_LENGTH_BUCKET = 64


def refusal(model: Any, max_len: int) -> str | None:
    """Why the runner cannot serve this model (None when it can)."""
    config: Any = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not SwiGLU's silu"
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < max_len:
        return f"sliding-window attention ({window} tokens) is shorter than the context ({max_len})"
    if getattr(model, "peft_config", None) is not None:
        return "the model is wrapped by peft"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        return "the model does not have the Llama module layout"
    return None


def length_bucket(length: int, max_len: int) -> int:
    bucket = MIN_LENGTH_BUCKET
    while bucket < length:
        bucket *= 2
    return min(bucket, max_len)


def batch_bucket(rows: int) -> int:
    for bucket in BATCH_BUCKETS:
        if bucket >= rows:
            return bucket
    return rows


@dataclass(slots=True, frozen=True)
class PrefillChunk:
    """Tokens `tokens` of the sequence in `slot`, starting at position `start`."""

    slot: int
    start: int
    tokens: Sequence[int]
    wants_logits: bool


class LlamaRunner:
    """Prefill chunks and decode steps of a Llama-family model over a `SlotKVCache`."""

    def __init__(
        self,
        model: Any,
        cache: SlotKVCache,
        *,
        use_graphs: bool,
        compile_layers: bool = True,
        triton_decode: bool = True,
    ) -> None:
        config = model.config
        self._model = model
        self._inner = model.model
        self._cache = cache
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self._device = cache.data.device
        self._use_graphs = use_graphs and self._device.type == "cuda"
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None
        self._layers: list[LayerModules] = [prepare_layer(layer) for layer in self._inner.layers]
        self._is_fused = all(layer.weights is not None for layer in self._layers)
        # Compiled only where decode steps are graph-captured: compiling pays off over many
        # replays, and on CPU it would need a C compiler for no gain in the tests.
        compile_enabled = compile_layers and self._use_graphs and self._is_fused
        self._decode_inputs = MaybeCompiled(decode_inputs, enabled=compile_enabled)
        self._decode_attention_and_mlp = MaybeCompiled(decode_attention_and_mlp, enabled=compile_enabled)
        # Batch-1 steps as five Triton launches a layer (transformers_triton), where graphs replay them.
        self.triton_decode = (
            triton_decode
            and compile_enabled
            and transformers_triton.available(self._device, cache.data.dtype)
        )
        slots = cache.slots
        self._tokens = torch.zeros(batch_bucket(slots), dtype=torch.long, device=self._device)
        self._positions = torch.full_like(self._tokens, cache.scratch)
        self._rows = torch.arange(self._tokens.shape[0], device=self._device)
        self._staging = HostStaging(self._tokens.shape[0], self._device)
        self._step_index: torch.Tensor | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None
        """The slots of the latest decode step as a device index; None when they were 0 .. rows-1."""

    @property
    def cache(self) -> SlotKVCache:
        return self._cache

    @property
    def is_compiled(self) -> bool:
        return self._decode_inputs.is_compiled

    def _is_hooked(self) -> bool:
        """Whether some layer's modules have hooks (LoRA adapters loaded): steps then run eagerly,
        module by module, so each hook adds its current delta."""
        return any(layer.is_hooked for layer in self._layers)

    def decode(
        self, slots: Sequence[int], positions: Sequence[int], tokens: Sequence[int] | None
    ) -> torch.Tensor:
        """One decode step: `tokens[i]` at `positions[i]` of `slots[i]`; next-token logits `(rows, vocab)`.

        The step runs over slots `0 .. bucket-1`: rows of other slots feed a dummy
        token to the scratch position and are ignored. `tokens` None: the step feeds
        what `feed_greedy` left on the device for these slots (a subset of the
        previous step's), so it can be launched before the host has seen them.
        """
        rows = min(batch_bucket(max(slots) + 1), self._cache.slots)
        length = length_bucket(max(positions) + 1, self._cache.max_len)
        staging = self._staging.next()
        staged_positions = staging.positions
        staged_positions[:rows] = self._cache.scratch
        staged_positions[list(slots)] = positions
        self._positions[:rows].copy_(staging.positions_tensor[:rows], non_blocking=True)
        if tokens is not None:
            staged_tokens = staging.tokens
            staged_tokens[:rows] = 0
            staged_tokens[list(slots)] = tokens
            self._tokens[:rows].copy_(staging.tokens_tensor[:rows], non_blocking=True)
        staging.queued()
        if self._is_hooked():
            logits = self._decode_forward(rows, length, fused=False)
        else:
            logits = self._run_decode(rows, length)
        if len(slots) == rows and all(slot == row for row, slot in enumerate(slots)):
            self._step_index = None
            return logits
        self._step_index = torch.tensor(list(slots), device=self._device)
        return logits.index_select(0, self._step_index)

    def feed_greedy(self, logits: torch.Tensor) -> StagedTokens:
        """Pick the argmax of the latest decode step's `logits` on the device, write it as the
        next step's input tokens of the same slots, and start copying it to the host.

        Nothing here waits for the GPU: the next `decode(..., tokens=None)` can be
        launched at once, and the host reads the tokens (`StagedTokens.tokens`) while
        that step runs.
        """
        chosen = logits.argmax(dim=-1)
        count = chosen.shape[0]
        if self._step_index is None:
            self._tokens[:count].copy_(chosen)
        else:
            self._tokens.index_copy_(0, self._step_index, chosen)
        return self._staging.stage(chosen)

    def _run_decode(self, rows: int, length: int) -> torch.Tensor:
        fused = self._is_fused
        if not self._use_graphs:
            return self._decode_forward(rows, length, fused=fused)
        captured = self._graphs.get((rows, length))
        if captured is not None:
            graph, output = captured
            graph.replay()
            return output
        # The first step of a shape runs eagerly (its writes are the real ones) and doubles as
        # the warm-up (and the compilation) the capture needs; the capture itself executes nothing.
        stream = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):
            eager = self._decode_forward(rows, length, fused=fused)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._decode_forward(rows, length, fused=fused)
        self._graphs[(rows, length)] = (graph, output)
        return eager

    def _decode_forward(self, rows: int, length: int, *, fused: bool) -> torch.Tensor:
        if fused and rows == 1 and self.triton_decode:
            return self._triton_decode_forward(length)
        tokens = self._tokens[:rows]
        positions = self._positions[:rows]
        hidden = self._inner.embed_tokens(tokens).unsqueeze(1)
        cos, sin = self._inner.rotary_emb(hidden, positions.unsqueeze(1))
        keys_index = torch.arange(length, device=self._device)
        mask = (keys_index.unsqueeze(0) <= positions.unsqueeze(1)).view(rows, 1, 1, length)
        write_rows = self._rows[:rows]
        for index, layer in enumerate(self._layers):
            if fused:
                hidden = self._fused_decode_layer(index, layer, hidden, cos, sin, mask, rows, length)
                continue

            def attend(
                queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, index: int = index
            ) -> torch.Tensor:
                key_cache, value_cache = self._cache.keys(index), self._cache.values(index)
                key_cache[write_rows, :, positions] = keys[:, :, 0, :]
                value_cache[write_rows, :, positions] = values[:, :, 0, :]
                return self._attention(
                    queries, key_cache[:rows, :, :length], value_cache[:rows, :, :length], mask
                )

            hidden = self._module_layer(layer, hidden, cos, sin, attend)
        hidden = norm(self._inner.norm, hidden[:, -1, :])
        logits: torch.Tensor = project(self._model.lm_head, hidden).float()
        return logits

    def _triton_decode_forward(self, length: int) -> torch.Tensor:
        """A one-row decode step (slot 0) through the Triton layer: five launches a layer."""
        tokens, positions = self._tokens[:1], self._positions[:1]
        hidden = self._inner.embed_tokens(tokens)
        cos_table, sin_table = self._rope_tables(hidden)
        cos, sin = cos_table.index_select(0, positions), sin_table.index_select(0, positions)
        for index, layer in enumerate(self._layers):
            assert layer.weights is not None  # only called when every layer is fused
            hidden = transformers_triton.decode_layer(
                hidden,
                layer.weights,
                cos,
                sin,
                positions,
                self._cache.data[index],
                length,
                self._scaling,
                self.heads,
                self.kv_heads,
            )
        hidden = norm(self._inner.norm, hidden)
        logits: torch.Tensor = project(self._model.lm_head, hidden).float()
        return logits

    def _rope_tables(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every cache position, `(max_len + 1, head_dim)`, from the model's own
        `rotary_emb` once: a batch-1 step then reads its row with one gather each instead of
        the eight or so small kernels that computing them takes (about 20 us a step on an H100).
        The values are the same: `rotary_emb` works per position."""
        if self._rope is None:
            positions = torch.arange(self._cache.max_len + 1, device=self._device).unsqueeze(0)
            cos, sin = self._inner.rotary_emb(like.unsqueeze(1), positions)
            self._rope = (cos[0].contiguous(), sin[0].contiguous())
        return self._rope

    def prefill(self, chunks: Sequence[PrefillChunk]) -> torch.Tensor:
        """Run several sequences' prompt chunks in one padded batch; logits of the last token of each
        chunk that `wants_logits`, in order, `(wanted, vocab)` (float32)."""
        count = len(chunks)
        width = max(len(chunk.tokens) for chunk in chunks)
        device = self._device
        token_rows = [list(chunk.tokens) + [0] * (width - len(chunk.tokens)) for chunk in chunks]
        tokens = torch.tensor(token_rows, dtype=torch.long, device=device)
        starts = torch.tensor([chunk.start for chunk in chunks], dtype=torch.long, device=device)
        offsets = torch.arange(width, device=device)
        positions = starts.unsqueeze(1) + offsets.unsqueeze(0)
        lengths = torch.tensor([len(chunk.tokens) for chunk in chunks], device=device)
        is_real = offsets.unsqueeze(0) < lengths.unsqueeze(1)
        slots = torch.tensor([chunk.slot for chunk in chunks], dtype=torch.long, device=device)
        write_slots = slots.unsqueeze(1).expand(count, width)[is_real]
        write_positions = positions[is_real]
        length = max(chunk.start + len(chunk.tokens) for chunk in chunks)
        keys_index = torch.arange(length, device=device)
        mask = (keys_index.view(1, 1, length) <= positions.unsqueeze(2)).unsqueeze(1)
        hidden = self._inner.embed_tokens(tokens)
        cos, sin = self._inner.rotary_emb(hidden, positions)
        fused = self._is_fused and not self._is_hooked()
        for index, layer in enumerate(self._layers):

            def attend(
                queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, index: int = index
            ) -> torch.Tensor:
                key_cache, value_cache = self._cache.keys(index), self._cache.values(index)
                key_cache[write_slots, :, write_positions] = keys.transpose(1, 2)[is_real]
                value_cache[write_slots, :, write_positions] = values.transpose(1, 2)[is_real]
                return self._attention(
                    queries, key_cache[slots, :, :length], value_cache[slots, :, :length], mask
                )

            if fused:
                hidden = self._fused_layer(layer, hidden, cos, sin, attend)
            else:
                hidden = self._module_layer(layer, hidden, cos, sin, attend)
        wanted = [row for row, chunk in enumerate(chunks) if chunk.wants_logits]
        last = [len(chunks[row].tokens) - 1 for row in wanted]
        picked = hidden[
            torch.tensor(wanted, dtype=torch.long, device=device),
            torch.tensor(last, dtype=torch.long, device=device),
        ]
        logits: torch.Tensor = project(self._model.lm_head, norm(self._inner.norm, picked)).float()
        return logits

    def _fused_decode_layer(
        self,
        index: int,
        layer: LayerModules,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        rows: int,
        length: int,
    ) -> torch.Tensor:
        """One layer of a decode step on the fused path: two (compiled) halves around one cache write."""
        weights = layer.weights
        assert weights is not None  # only called when every layer is fused
        queries, packed = self._decode_inputs(
            hidden,
            weights.input_norm,
            weights.input_eps,
            weights.qkv,
            weights.qkv_bias,
            cos,
            sin,
            self.heads,
            self.kv_heads,
        )
        layer_cache = self._cache.data[index]
        layer_cache[:, self._rows[:rows], :, self._positions[:rows]] = packed
        result: torch.Tensor = self._decode_attention_and_mlp(
            hidden,
            queries,
            layer_cache[0, :rows, :, :length],
            layer_cache[1, :rows, :, :length],
            mask,
            self._scaling,
            weights.output,
            weights.output_bias,
            weights.post_norm,
            weights.post_eps,
            weights.gate_up,
            weights.gate_up_bias,
            weights.down,
            weights.down_bias,
        )
        return result

    def _fused_layer(
        self, layer: LayerModules, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Any
    ) -> torch.Tensor:
        """One layer of a prefill chunk on the fused path (plain functions: prefill is compute-bound
        and its shapes vary too much to compile)."""
        weights = layer.weights
        assert weights is not None  # only called when every layer is fused
        queries, keys, values = attention_inputs(
            hidden,
            weights.input_norm,
            weights.input_eps,
            weights.qkv,
            weights.qkv_bias,
            cos,
            sin,
            self.heads,
            self.kv_heads,
        )
        return attention_output_and_mlp(
            hidden,
            attend(queries, keys, values),
            weights.output,
            weights.output_bias,
            weights.post_norm,
            weights.post_eps,
            weights.gate_up,
            weights.gate_up_bias,
            weights.down,
            weights.down_bias,
        )

    def _module_layer(
        self, layer: LayerModules, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Any
    ) -> Any:
        """The layer through the model's own modules, so that their hooks (LoRA deltas) run."""
        modules = layer.layer
        attention, mlp = modules.self_attn, modules.mlp
        batch, width, _ = hidden.shape
        normed = norm(modules.input_layernorm, hidden)
        queries, keys, values = project_all(layer.qkv, normed)
        queries = queries.view(batch, width, self.heads, self.head_dim).transpose(1, 2)
        keys = keys.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
        values = values.view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
        queries, keys = rotate(queries, keys, cos, sin)
        attended = attend(queries, keys, values)
        attended = attended.transpose(1, 2).reshape(batch, width, self.heads * self.head_dim)
        hidden = hidden + project(attention.o_proj, attended)
        normed = norm(modules.post_attention_layernorm, hidden)
        gate, up = project_all(layer.gate_up, normed)
        return hidden + project(mlp.down_proj, mlp.act_fn(gate) * up)

    def _attention(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Grouped-query attention without repeating keys: each KV head's query heads are folded
        into the query length, so SDPA sees `kv_heads` heads and any backend can run it."""
        batch, _, width, _ = queries.shape
        groups = self.heads // self.kv_heads
        folded = queries.reshape(batch, self.kv_heads, groups * width, self.head_dim)
        folded_mask = mask if width == 1 else mask.repeat(1, 1, groups, 1)
        attended = functional.scaled_dot_product_attention(
            folded, keys, values, attn_mask=folded_mask, scale=self._scaling
        )
        return attended.reshape(batch, self.heads, width, self.head_dim)

    @property
    def _scaling(self) -> float:
        return float(self._layers[0].layer.self_attn.scaling)
