"""The batch-1 decode layer as five Triton launches (see `transformers_triton_kernels`).

Why only batch 1: the kernels are GEMVs (one input vector per weight read), written for the
case where a step is bound by launches and weight bytes rather than arithmetic. From two rows
up the compiled path (`transformers_runner_layers`, cuBLAS GEMMs with inductor-fused
elementwise work) reads the weights once for every row and stays in use.

`available` says whether the path can run: CUDA, Triton importable, bf16 weights, and not
switched off with `ZIGGURAT_TRITON_DECODE=0` (for comparing against the compiled path).
Everything here is CUDA-only; the CPU tests exercise the reference path, and
`bench/engine_throughput.py` checks these kernels against it on the GPU.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from ziggurat.model.engines.transformers_runner_layers import LayerWeights

ATTEND_BLOCK = 64


def available(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cuda" or dtype != torch.bfloat16:
        return False
    if os.environ.get("ZIGGURAT_TRITON_DECODE", "1") == "0":
        return False
    return importlib.util.find_spec("triton") is not None


def _kernels() -> Any:
    from ziggurat.model.engines import transformers_triton_kernels

    return transformers_triton_kernels


def gemv(
    vector: torch.Tensor,
    weight: torch.Tensor,
    *,
    norm: torch.Tensor | None = None,
    eps: float = 0.0,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """`weight @ rmsnorm(vector)` (norm when given), then `silu(gate) * up` over the two halves
    of the rows (`swiglu`), plus bias and `residual`; `vector` is one row `(1, K)`."""
    rows, columns = weight.shape
    outputs = rows // 2 if swiglu else rows
    out = torch.empty((1, outputs), dtype=vector.dtype, device=vector.device)
    kernels = _kernels()

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return ((outputs + meta["BLOCK_N"] - 1) // meta["BLOCK_N"],)

    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter cannot autotune
    kernel = kernels.gemv_jit if interpreted else kernels.gemv_kernel
    fixed = {"BLOCK_N": 16, "BLOCK_K": 64} if interpreted else {}
    kernel[grid](
        vector,
        weight,
        out,
        norm if norm is not None else vector,
        bias if bias is not None else vector,
        residual if residual is not None else vector,
        outputs,
        columns,
        eps,
        HAS_NORM=norm is not None,
        HAS_BIAS=bias is not None,
        HAS_RES=residual is not None,
        SWIGLU=swiglu,
        **fixed,
    )
    return out


def attend(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    layer_cache: torch.Tensor,
    length: int,
    scale: float,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    """Rotary embedding, the cache write at `positions` (row r is slot r) and attention over the
    first `min(position, length)` cached keys plus the new one: `(rows, heads * head_dim)`.

    `qkv`: `(rows, (heads + 2 kv_heads) * head_dim)`; `cos`/`sin`: `(rows, head_dim)`;
    `layer_cache`: one layer of the slot cache, `(2, slots, kv_heads, max_len + 1, head_dim)`."""
    rows = qkv.shape[0]
    head_dim = layer_cache.shape[-1]
    group = heads // kv_heads
    out = torch.empty((rows, heads * head_dim), dtype=qkv.dtype, device=qkv.device)
    _kernels().attend_kernel[(rows, kv_heads)](
        qkv,
        cos,
        sin,
        positions,
        layer_cache,
        out,
        length,
        scale,
        qkv.stride(0),
        out.stride(0),
        layer_cache.stride(1),
        layer_cache.stride(2),
        layer_cache.stride(0),
        HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=head_dim,
        GROUP=group,
        GROUP_PAD=max(16, triton_next_power_of_2(group)),
        BLOCK_L=ATTEND_BLOCK,
        DOT_FLOAT=os.environ.get("TRITON_INTERPRET") == "1",
    )
    return out


def triton_next_power_of_2(value: int) -> int:
    power = 1
    while power < value:
        power *= 2
    return power


def decode_layer(
    hidden: torch.Tensor,
    weights: LayerWeights,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    layer_cache: torch.Tensor,
    length: int,
    scale: float,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    """One decoder layer for one token (`hidden`: `(1, hidden_size)`), five launches."""
    qkv = gemv(hidden, weights.qkv, norm=weights.input_norm, eps=weights.input_eps, bias=weights.qkv_bias)
    attended = attend(qkv, cos, sin, positions, layer_cache, length, scale, heads, kv_heads)
    hidden = gemv(attended, weights.output, bias=weights.output_bias, residual=hidden)
    activated = gemv(
        hidden,
        weights.gate_up,
        norm=weights.post_norm,
        eps=weights.post_eps,
        bias=weights.gate_up_bias,
        swiglu=True,
    )
    return gemv(activated, weights.down, bias=weights.down_bias, residual=hidden)
