"""GPU-only correctness check of the Triton batch-1 decode path against the reference path.

The CPU tests cannot run Triton kernels, so the benchmark runs this first on the device, on
fresh random inputs: the attention kernel (rotary embedding + cache write + grouped-query
attention) against the same math in torch, the norm/SwiGLU/residual GEMVs against torch, and
a whole decode step of the runner (Triton layers vs the compiled layers) over the same cache.
Errors are relative to the reference's largest magnitude (max) and in L2; bf16 lands near 1e-2.

Command: `python bench/triton_check.py [1b,8b]` (also called from `engine_throughput.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ziggurat.model.engines import transformers_triton
from ziggurat.model.engines.transformers_kv import SlotKVCache
from ziggurat.model.engines.transformers_runner import LlamaRunner, PrefillChunk
from ziggurat.model.engines.transformers_runner_layers import rotate

LIMIT = 3e-2


def errors(ours: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    ours, reference = ours.float(), reference.float()
    max_error = float((ours - reference).abs().max() / reference.abs().max())
    l2_error = float((ours - reference).norm() / reference.norm())
    return max_error, l2_error


def check_kernels(
    heads: int, kv_heads: int, head_dim: int, hidden: int, device: torch.device
) -> dict[str, Any]:
    bf16 = torch.bfloat16
    generator = torch.Generator(device=device).manual_seed(int(torch.seed()) % 2**31)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device)

    found: dict[str, Any] = {}
    vector = rand(1, hidden).to(bf16)
    weight = (rand(3 * hidden, hidden) / hidden**0.5).to(bf16)
    scale = (1 + rand(hidden) / 10).to(bf16)
    normed = functional.rms_norm(vector, (hidden,), scale, 1e-5)
    found["gemv_norm"] = errors(
        transformers_triton.gemv(vector, weight, norm=scale, eps=1e-5), functional.linear(normed, weight)
    )
    gate, up = functional.linear(normed, weight[: 2 * hidden]).chunk(2, dim=-1)
    found["gemv_swiglu"] = errors(
        transformers_triton.gemv(vector, weight[: 2 * hidden], norm=scale, eps=1e-5, swiglu=True),
        functional.silu(gate) * up,
    )
    residual = rand(1, 3 * hidden).to(bf16)
    found["gemv_residual"] = errors(
        transformers_triton.gemv(vector, weight, residual=residual),
        functional.linear(vector, weight) + residual,
    )
    # Attention: 3 rows at different positions over a random cache.
    rows, max_len, length = 3, 300, 256
    positions = torch.tensor([0, 130, 255], device=device)
    qkv = rand(rows, (heads + 2 * kv_heads) * head_dim).to(bf16)
    cache = rand(2, rows, kv_heads, max_len + 1, head_dim).to(bf16)
    angles = rand(rows, head_dim // 2) * 10
    cos = torch.cat([angles.cos()] * 2, dim=-1).to(bf16)
    sin = torch.cat([angles.sin()] * 2, dim=-1).to(bf16)
    reference_cache = cache.clone()
    queries, keys, values = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    queries = queries.view(rows, 1, heads, head_dim).transpose(1, 2)
    keys = keys.view(rows, 1, kv_heads, head_dim).transpose(1, 2)
    values = values.view(rows, 1, kv_heads, head_dim).transpose(1, 2)
    queries, keys = rotate(queries, keys, cos.unsqueeze(1), sin.unsqueeze(1))
    index = torch.arange(rows, device=device)
    reference_cache[0, index, :, positions] = keys[:, :, 0]
    reference_cache[1, index, :, positions] = values[:, :, 0]
    softmax_scale = head_dim**-0.5
    mask = (torch.arange(length, device=device)[None] <= positions[:, None]).view(rows, 1, 1, length)
    grouped = queries.reshape(rows, kv_heads, heads // kv_heads, head_dim).float()
    scores = grouped @ reference_cache[0, :, :, :length].float().transpose(-1, -2) * softmax_scale
    probabilities = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    attended = (probabilities @ reference_cache[1, :, :, :length].float()).reshape(rows, heads * head_dim)
    ours = transformers_triton.attend(qkv, cos, sin, positions, cache, length, softmax_scale, heads, kv_heads)
    found["attention"] = errors(ours, attended)
    found["cache_write"] = errors(cache, reference_cache)
    return found


def check_step(model: Any, device: torch.device, prompt: int = 128) -> dict[str, Any]:
    """One decode step at batch 1 through both paths of one runner, on the same cache."""
    config = model.config
    cache = SlotKVCache(
        layers=config.num_hidden_layers,
        kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        slots=4,
        max_len=prompt + 64,
        dtype=torch.bfloat16,
        device=device,
    )
    runner = LlamaRunner(model, cache, use_graphs=True)
    found: dict[str, Any] = {"triton_decode": runner.triton_decode}
    if not runner.triton_decode:
        return found
    ids = torch.randint(0, config.vocab_size, (prompt,)).tolist()
    with torch.inference_mode():
        slot = cache.allocate()
        token = int(runner.prefill([PrefillChunk(slot, 0, ids, True)])[0].argmax())
        runner._tokens[:1].fill_(token)
        runner._positions[:1].fill_(prompt)
        length = 256 if prompt + 64 >= 256 else prompt + 64
        runner.triton_decode = False
        reference = runner._decode_forward(1, length, fused=True).clone()
        runner.triton_decode = True
        ours = runner._decode_forward(1, length, fused=True).clone()
    found["step_logits"] = errors(ours, reference)
    found["same_argmax"] = bool(ours.argmax() == reference.argmax())
    del runner
    return found


def check(model: Any, device: torch.device) -> dict[str, Any]:
    """Kernel and whole-step errors for `model`'s shapes; raises when one is over the limit."""
    config = model.config
    found = check_kernels(
        config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.hidden_size, device
    )
    found.update(check_step(model, device))
    print(f"triton check (max rel. error, L2 rel. error): {found}", flush=True)
    for name, value in found.items():
        if isinstance(value, tuple) and name != "step_logits":
            assert value[0] < LIMIT, f"Triton {name}: max relative error {value[0]:.4f} over {LIMIT}"
    if "step_logits" in found:
        assert found["step_logits"][1] < 0.1, f"Triton decode step logits: {found['step_logits']}"
    return found


if __name__ == "__main__":
    from engine_throughput import build_model

    for shape in (sys.argv[1] if len(sys.argv) > 1 else "1b,8b").split(","):
        check(build_model(shape, torch.device("cuda")), torch.device("cuda"))
