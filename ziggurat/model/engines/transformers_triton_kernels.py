"""Triton kernels of the batch-1 decode layer (CUDA only; imported only where Triton is installed).

A layer of a one-token step is five launches here instead of ~16:

1. `_gemv`: RMSNorm of the hidden vector computed in each program's prologue, then the fused
   q/k/v GEMV (bias when the checkpoint has one);
2. `_attend`: rotary embedding of q and k, the new key and value written into the slot cache,
   and grouped-query attention of the group's query heads over the slot's live length
   (one program per KV head, online softmax, the new key taken from registers);
3. `_gemv` with a residual epilogue: output projection plus the residual stream;
4. `_gemv` with the norm prologue and a SwiGLU epilogue: gate and up rows of the fused weight
   read by the same program, `silu(gate) * up` written out;
5. `_gemv` with the residual epilogue: down projection.

Why: at batch 1 the 1B model's layer moves only ~121 MB of weights (40 us at 3 TB/s), so the
fixed cost of each launch and of the gap between kernels in a graph (a few us each) decides
the step time; the profile counted 16 of them a layer. Roundings follow the HF module path
(bf16 after the norm, after each projection and after rotary embedding).
"""

from __future__ import annotations

import triton  # type: ignore[import-not-found, unused-ignore]
import triton.language as tl  # type: ignore[import-not-found, unused-ignore]

GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)
    for block_n, block_k, warps, stages in (
        (4, 512, 4, 3),
        (8, 256, 4, 3),
        (8, 512, 8, 3),
        (16, 256, 8, 3),
        (16, 128, 4, 4),
        (32, 128, 8, 4),
        (2, 1024, 4, 3),
        (4, 1024, 8, 3),
        (16, 512, 8, 3),
    )
]


@triton.jit  # type: ignore[untyped-decorator, unused-ignore]
def gemv_jit(  # type: ignore[no-untyped-def]
    x_ptr,
    w_ptr,
    out_ptr,
    norm_ptr,
    bias_ptr,
    res_ptr,
    N,
    K,
    eps,
    HAS_NORM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
    SWIGLU: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    columns = tl.arange(0, BLOCK_K)
    rstd = 1.0
    if HAS_NORM:
        squares = tl.zeros([BLOCK_K], dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            offsets = start + columns
            value = tl.load(x_ptr + offsets, mask=offsets < K, other=0.0).to(tl.float32)
            squares += value * value
        rstd = 1.0 / tl.sqrt(tl.sum(squares, axis=0) / K + eps)
    # Partial sums stay per lane across the K loop and are reduced once at the end: a reduction
    # across threads every iteration would stall the weight stream.
    partial = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    partial_up = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        offsets = start + columns
        column_mask = offsets < K
        x = tl.load(x_ptr + offsets, mask=column_mask, other=0.0).to(tl.float32)
        if HAS_NORM:
            scale = tl.load(norm_ptr + offsets, mask=column_mask, other=0.0).to(tl.float32)
            x = ((x * rstd).to(tl.bfloat16).to(tl.float32) * scale).to(tl.bfloat16).to(tl.float32)
        mask = row_mask[:, None] & column_mask[None, :]
        weights = tl.load(w_ptr + rows[:, None] * K + offsets[None, :], mask=mask, other=0.0)
        partial += weights.to(tl.float32) * x[None, :]
        if SWIGLU:
            up = tl.load(w_ptr + (rows[:, None] + N) * K + offsets[None, :], mask=mask, other=0.0)
            partial_up += up.to(tl.float32) * x[None, :]
    acc = tl.sum(partial, axis=1)
    acc_up = tl.sum(partial_up, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
        if SWIGLU:
            acc_up += tl.load(bias_ptr + N + rows, mask=row_mask, other=0.0).to(tl.float32)
    if SWIGLU:
        gate = acc.to(tl.bfloat16).to(tl.float32)
        activated = (gate / (1.0 + tl.exp(-gate))).to(tl.bfloat16).to(tl.float32)
        acc = activated * acc_up.to(tl.bfloat16).to(tl.float32)
    if HAS_RES:
        residual = tl.load(res_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
        acc = acc.to(tl.bfloat16).to(tl.float32) + residual
    tl.store(out_ptr + rows, acc.to(out_ptr.dtype.element_ty), mask=row_mask)


gemv_kernel = triton.autotune(configs=GEMV_CONFIGS, key=["N", "K", "HAS_NORM", "SWIGLU"])(gemv_jit)
"""`gemv_jit` with its block shape picked per weight shape on first use (timed on the device)."""


@triton.jit  # type: ignore[untyped-decorator, unused-ignore]
def attend_kernel(  # type: ignore[no-untyped-def]
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    positions_ptr,
    cache_ptr,
    out_ptr,
    length,
    scale,
    qkv_row_stride,
    out_row_stride,
    slot_stride,
    head_stride,
    value_offset,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    BLOCK_L: tl.constexpr,
    DOT_FLOAT: tl.constexpr,
):
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    position = tl.load(positions_ptr + row)
    dims = tl.arange(0, HEAD_DIM)
    half: tl.constexpr = HEAD_DIM // 2
    partner = (dims + half) % HEAD_DIM
    sign = tl.where(dims < half, -1.0, 1.0)
    cos = tl.load(cos_ptr + row * HEAD_DIM + dims).to(tl.float32)
    sin = tl.load(sin_ptr + row * HEAD_DIM + dims).to(tl.float32)
    base = qkv_ptr + row * qkv_row_stride
    key_at = HEADS * HEAD_DIM + kv_head * HEAD_DIM
    key = tl.load(base + key_at + dims).to(tl.float32)
    key_partner = tl.load(base + key_at + partner).to(tl.float32)
    key = (key * cos + sign * key_partner * sin).to(tl.bfloat16)
    value = tl.load(base + (HEADS + KV_HEADS) * HEAD_DIM + kv_head * HEAD_DIM + dims)
    slot = cache_ptr + row * slot_stride + kv_head * head_stride
    tl.store(slot + position * HEAD_DIM + dims, key)
    tl.store(slot + value_offset + position * HEAD_DIM + dims, value)

    group = tl.arange(0, GROUP_PAD)
    group_mask = group < GROUP
    query_at = (kv_head * GROUP + group) * HEAD_DIM
    query = tl.load(base + query_at[:, None] + dims[None, :], mask=group_mask[:, None], other=0.0)
    query_partner = tl.load(base + query_at[:, None] + partner[None, :], mask=group_mask[:, None], other=0.0)
    query = (
        query.to(tl.float32) * cos[None, :] + sign[None, :] * query_partner.to(tl.float32) * sin[None, :]
    ).to(tl.bfloat16)
    # The new token's own key and value, from registers: no read-after-write through memory.
    best = tl.sum(query.to(tl.float32) * key.to(tl.float32)[None, :], axis=1) * scale
    total = tl.full([GROUP_PAD], 1.0, dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32) + value.to(tl.float32)[None, :]
    end = tl.minimum(position, length)
    steps = tl.arange(0, BLOCK_L)
    for start in range(0, end, BLOCK_L):
        offsets = start + steps
        live = offsets < end
        keys = tl.load(slot + offsets[:, None] * HEAD_DIM + dims[None, :], mask=live[:, None], other=0.0)
        if DOT_FLOAT:  # Triton's CPU interpreter multiplies bf16 as raw integers
            scores = tl.dot(query.to(tl.float32), tl.trans(keys.to(tl.float32))) * scale
        else:
            scores = tl.dot(query, tl.trans(keys)) * scale
        scores = tl.where(live[None, :], scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        alpha = tl.exp(best - new_best)
        weights = tl.exp(scores - new_best[:, None])
        total = total * alpha + tl.sum(weights, axis=1)
        values = tl.load(
            slot + value_offset + offsets[:, None] * HEAD_DIM + dims[None, :], mask=live[:, None], other=0.0
        )
        if DOT_FLOAT:
            mixed = tl.dot(weights.to(tl.bfloat16).to(tl.float32), values.to(tl.float32))
        else:
            mixed = tl.dot(weights.to(tl.bfloat16), values)
        acc = acc * alpha[:, None] + mixed
        best = new_best
    out = acc / total[:, None]
    out_at = out_ptr + row * out_row_stride + query_at[:, None] + dims[None, :]
    tl.store(out_at, out.to(tl.bfloat16), mask=group_mask[:, None])
