"""The lean runner's per-layer math: fused projections and the two halves of a decoder layer.

Why fused weights: at batch 1 a decode step is a chain of small kernels, and
each costs a few microseconds whatever its size. Concatenating the q/k/v
weights (and gate/up) once at load turns five GEMMs per layer into two. The
modules' own `weight` parameters become views of the fused tensor, so memory is
not doubled and the HF forward, `state_dict` and per-module hooks keep working.

Why pure functions of tensors (`attention_inputs`, `attention_output_and_mlp`):
so one `torch.compile` of each serves every layer (the weights are arguments,
not module attributes that Dynamo would guard on per layer), and inductor fuses
the elementwise work around the GEMMs (RMSNorm, rotary embedding, residual
adds, SiLU x up) into a handful of kernels. The cache write and attention stay
outside the compiled code: they index the slot cache in place. The same
functions run uncompiled on CPU and for prefill, so the CPU float32 tests check
the very math the GPU compiles.

LoRA: per-module forward hooks (`transformers_lora`) must see each module's own
output, so `project_all` runs the modules one by one whenever any of them has
hooks, and the runner then takes its module path (eager, no CUDA graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional

from ziggurat.telemetry import get_logger

log = get_logger(__name__)


def project(linear: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """A weight matrix applied through its module (the path where LoRA hooks run)."""
    result: torch.Tensor = linear(hidden)
    return result


@dataclass(slots=True, frozen=True)
class LinearGroup:
    """Several linear layers over the same input, and (when fusable) their one concatenated weight."""

    modules: tuple[nn.Module, ...]
    sizes: tuple[int, ...]
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    @property
    def is_hooked(self) -> bool:
        return any(module._forward_hooks or module._forward_pre_hooks for module in self.modules)


def fuse_linears(modules: Sequence[nn.Module]) -> LinearGroup:
    """Concatenate the weights of plain `nn.Linear` layers along the output axis, in place.

    Anything else (quantised layers, mixed dtypes or devices) stays unfused and is
    applied module by module."""
    sizes = tuple(int(getattr(module, "out_features", 0)) for module in modules)
    plain = all(type(module) is nn.Linear for module in modules)
    if not plain:
        return LinearGroup(tuple(modules), sizes, None, None)
    linears = [cast(nn.Linear, module) for module in modules]
    weights = [linear.weight for linear in linears]
    if len({(weight.dtype, weight.device, weight.shape[1]) for weight in weights}) != 1:
        return LinearGroup(tuple(modules), sizes, None, None)
    with torch.no_grad():
        fused = torch.cat([weight.detach() for weight in weights], dim=0)
        biases: list[torch.Tensor | None] = [linear.bias for linear in linears]
        fused_bias = None
        if any(bias is not None for bias in biases):
            fused_bias = torch.cat(
                [
                    bias.detach() if bias is not None else fused.new_zeros(size)
                    for bias, size in zip(biases, sizes, strict=True)
                ]
            )
        offset = 0
        for linear, size in zip(linears, sizes, strict=True):
            linear.weight.data = fused[offset : offset + size]
            if linear.bias is not None and fused_bias is not None:
                linear.bias.data = fused_bias[offset : offset + size]
            offset += size
    return LinearGroup(tuple(modules), sizes, fused, fused_bias)


def project_all(group: LinearGroup, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs of every module of `group` on `hidden`: one GEMM when fused and unhooked."""
    if group.weight is None or group.is_hooked:
        return tuple(project(module, hidden) for module in group.modules)
    return tuple(
        functional.linear(hidden, group.weight, group.bias).split_with_sizes(list(group.sizes), dim=-1)
    )


@dataclass(slots=True, frozen=True)
class LayerWeights:
    """One decoder layer's tensors for the fused path (norm epsilons are plain floats)."""

    input_norm: torch.Tensor
    input_eps: float
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    output: torch.Tensor
    output_bias: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


@dataclass(slots=True, frozen=True)
class LayerModules:
    """One decoder layer's modules, with its fused projection groups."""

    layer: Any
    qkv: LinearGroup
    gate_up: LinearGroup
    weights: LayerWeights | None
    """None when the layer cannot take the fused path (unfusable or non-RMSNorm modules)."""

    @property
    def is_hooked(self) -> bool:
        attention, mlp = self.layer.self_attn, self.layer.mlp
        return (
            self.qkv.is_hooked
            or self.gate_up.is_hooked
            or bool(attention.o_proj._forward_hooks or attention.o_proj._forward_pre_hooks)
            or bool(mlp.down_proj._forward_hooks or mlp.down_proj._forward_pre_hooks)
        )


def prepare_layer(layer: Any) -> LayerModules:
    attention, mlp = layer.self_attn, layer.mlp
    qkv = fuse_linears((attention.q_proj, attention.k_proj, attention.v_proj))
    gate_up = fuse_linears((mlp.gate_proj, mlp.up_proj))
    weights = None
    input_eps = getattr(layer.input_layernorm, "variance_epsilon", None)
    post_eps = getattr(layer.post_attention_layernorm, "variance_epsilon", None)
    plain = type(attention.o_proj) is nn.Linear and type(mlp.down_proj) is nn.Linear
    if qkv.weight is not None and gate_up.weight is not None and plain and input_eps and post_eps:
        weights = LayerWeights(
            input_norm=layer.input_layernorm.weight,
            input_eps=float(input_eps),
            qkv=qkv.weight,
            qkv_bias=qkv.bias,
            output=attention.o_proj.weight,
            output_bias=attention.o_proj.bias,
            post_norm=layer.post_attention_layernorm.weight,
            post_eps=float(post_eps),
            gate_up=gate_up.weight,
            gate_up_bias=gate_up.bias,
            down=mlp.down_proj.weight,
            down_bias=mlp.down_proj.bias,
        )
    return LayerModules(layer, qkv, gate_up, weights)


def attention_inputs(
    hidden: torch.Tensor,
    norm: torch.Tensor,
    eps: float,
    qkv: torch.Tensor,
    qkv_bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm, the fused q/k/v GEMM and rotary embedding: `(batch, heads, width, head_dim)` queries,
    `(batch, kv_heads, width, head_dim)` keys and values."""
    batch, width, _ = hidden.shape
    normed = functional.rms_norm(hidden, (hidden.shape[-1],), norm, eps)
    projected = functional.linear(normed, qkv, qkv_bias)
    head_dim = projected.shape[-1] // (heads + 2 * kv_heads)
    queries, keys, values = projected.split_with_sizes(
        [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1
    )
    queries = queries.view(batch, width, heads, head_dim).transpose(1, 2)
    keys = keys.view(batch, width, kv_heads, head_dim).transpose(1, 2)
    values = values.view(batch, width, kv_heads, head_dim).transpose(1, 2)
    queries, keys = rotate(queries, keys, cos, sin)
    return queries, keys, values


def attention_output_and_mlp(
    hidden: torch.Tensor,
    attended: torch.Tensor,
    output: torch.Tensor,
    output_bias: torch.Tensor | None,
    norm: torch.Tensor,
    eps: float,
    gate_up: torch.Tensor,
    gate_up_bias: torch.Tensor | None,
    down: torch.Tensor,
    down_bias: torch.Tensor | None,
) -> torch.Tensor:
    """The rest of the layer after attention (`attended`: `(batch, heads, width, head_dim)`):
    output projection and residual, RMSNorm, SwiGLU MLP and residual."""
    batch, _, width, _ = attended.shape
    attended = attended.transpose(1, 2).reshape(batch, width, -1)
    hidden = hidden + functional.linear(attended, output, output_bias)
    normed = functional.rms_norm(hidden, (hidden.shape[-1],), norm, eps)
    gate, up = functional.linear(normed, gate_up, gate_up_bias).chunk(2, dim=-1)
    return hidden + functional.linear(functional.silu(gate) * up, down, down_bias)


def decode_inputs(
    hidden: torch.Tensor,
    norm: torch.Tensor,
    eps: float,
    qkv: torch.Tensor,
    qkv_bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    kv_heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attention_inputs` for one token per row, with keys and values packed `(batch, 2, kv_heads,
    head_dim)`: the layout one indexed write puts into the slot cache (the profile showed two writes
    plus their copies costing more than the q/k/v GEMM at batch 1)."""
    queries, keys, values = attention_inputs(hidden, norm, eps, qkv, qkv_bias, cos, sin, heads, kv_heads)
    return queries, torch.stack((keys[:, :, 0], values[:, :, 0]), dim=1)


def decode_attention_and_mlp(
    hidden: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    output: torch.Tensor,
    output_bias: torch.Tensor | None,
    norm: torch.Tensor,
    eps: float,
    gate_up: torch.Tensor,
    gate_up_bias: torch.Tensor | None,
    down: torch.Tensor,
    down_bias: torch.Tensor | None,
) -> torch.Tensor:
    """Attention of one query per row over its cached `keys`/`values` (`(batch, kv_heads, length,
    head_dim)`, `mask` `(batch, 1, 1, length)`), then `attention_output_and_mlp`.

    Written as two small matrix products and a softmax rather than SDPA: with one query per row
    the memory-efficient kernel runs one block per KV head (16 us per layer at batch 1 on an
    H100), while these three kernels take a few microseconds and inductor fuses the softmax."""
    batch, heads, _, head_dim = queries.shape
    kv_heads = keys.shape[1]
    grouped = queries.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float() * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probabilities = torch.softmax(scores, dim=-1).to(values.dtype)
    attended = torch.matmul(probabilities, values).reshape(batch, heads, 1, head_dim)
    return attention_output_and_mlp(
        hidden, attended, output, output_bias, norm, eps, gate_up, gate_up_bias, down, down_bias
    )


def rotate(
    queries: torch.Tensor, keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return queries * cos + _rotate_half(queries) * sin, keys * cos + _rotate_half(keys) * sin


def _rotate_half(tensor: torch.Tensor) -> torch.Tensor:
    half = tensor.shape[-1] // 2
    return torch.cat((-tensor[..., half:], tensor[..., :half]), dim=-1)


def norm(module: Any, hidden: torch.Tensor) -> torch.Tensor:
    """RMSNorm as one fused kernel where the module is a plain RMSNorm (the HF module takes ~6)."""
    epsilon = getattr(module, "variance_epsilon", None)
    if epsilon is None:
        result: torch.Tensor = module(hidden)
        return result
    return functional.rms_norm(hidden, (hidden.shape[-1],), module.weight, epsilon)


class MaybeCompiled:
    """`torch.compile(function)` that falls back to the plain function for good if compiling fails
    (no Triton for this GPU, no C compiler): slower, never broken."""

    def __init__(self, function: Callable[..., Any], *, enabled: bool) -> None:
        self._function = function
        self._compiled: Callable[..., Any] | None = None
        if enabled:
            self._compiled = torch.compile(function, fullgraph=True, dynamic=None)

    @property
    def is_compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            return self._function(*args)
        try:
            return self._compiled(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception:  # compilation failures surface as many exception types
            log.exception("runner_compile_failed", function=self._function.__name__)
            self._compiled = None
            return self._function(*args)
