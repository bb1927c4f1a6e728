"""Question: where does a decode step of the lean runner spend its time, and what does each fusion buy?

For each model shape (random weights, bf16, see `engine_throughput.py`), three
variants of the same runner over the same slot cache, at batch 1 and 64 (every
row at position 128, length bucket 256):

- `module`: the step through the model's own modules (q/k/v, gate/up as separate
  GEMMs, rotary embedding and norms as separate kernels), captured in a CUDA graph:
  what the runner did before fusing;
- `fused`: q/k/v and gate/up fused into one GEMM each, eager elementwise ops, graph;
- `compiled`: the fused layer halves through `torch.compile` (inductor), graph;
- `triton`: as `compiled`, but a batch-1 step runs each layer as five Triton launches
  (`transformers_triton`: norm-prologue GEMVs, rope + cache write + attention in one kernel).

For the `triton` variant at batch 1, also back-to-back steps fed on the device (`feed_greedy`,
host reading tokens one step behind), as the decode loop's overlap runs them.

Reported per variant: kernels launched by one eager step (torch.profiler), median
time of a graph replay (CUDA events, 50 replays), and the relative L2 difference of
its logits from the `module` variant's. Then the top kernels of the compiled step,
and the host time per row of the decode loop's per-token work (`_accept`: text,
stop checks, events) at 64 and 256 concurrent requests.

Command: `python bench/runner_profile.py [--models 1b,8b] [--no-loop]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_throughput import EngineHarness, build_model, hbm_bandwidth, prompts, weight_bytes

from ziggurat.model.engines.transformers_batching import attention_backends
from ziggurat.model.engines.transformers_kv import SlotKVCache
from ziggurat.model.engines.transformers_runner import LlamaRunner, batch_bucket


def make_runner(
    model: Any, slots: int, max_len: int, *, fused: bool, compiled: bool, triton: bool = False
) -> LlamaRunner:
    config = model.config
    cache = SlotKVCache(
        layers=config.num_hidden_layers,
        kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        slots=slots,
        max_len=max_len,
        dtype=torch.bfloat16,
        device=torch.device("cuda"),
    )
    runner = LlamaRunner(model, cache, use_graphs=True, compile_layers=compiled, triton_decode=triton)
    if not fused:  # the `module` variant: what the runner did before fusing
        runner._is_fused = False
        runner._layers = [
            replace(
                layer,
                qkv=replace(layer.qkv, weight=None, bias=None),
                gate_up=replace(layer.gate_up, weight=None, bias=None),
            )
            for layer in runner._layers
        ]
    return runner


def step_args(rows: int) -> tuple[list[int], list[int], list[int]]:
    return list(range(rows)), [128] * rows, [(7 * row + 11) % 1000 for row in range(rows)]


def time_replays(runner: LlamaRunner, rows: int) -> tuple[float, torch.Tensor]:
    slots, positions, tokens = step_args(rows)
    logits = runner.decode(slots, positions, tokens).clone()  # eager + capture
    runner.decode(slots, positions, tokens)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(50):
        start.record()
        runner.decode(slots, positions, tokens)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), logits


def time_chained(runner: LlamaRunner, steps: int = 200) -> float:
    """Milliseconds per batch-1 step when each step feeds the previous step's argmax on the
    device and the host reads tokens one step behind (the decode loop's overlap), over
    `steps` back-to-back steps: what the GPU sustains once host work is hidden."""
    slots, positions, tokens = step_args(1)
    logits = runner.decode(slots, positions, tokens)
    staged = runner.feed_greedy(logits)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        logits = runner.decode(slots, positions, None)
        staged.tokens()
        staged = runner.feed_greedy(logits)
    staged.tokens()
    return (time.perf_counter() - started) * 1000 / steps


def count_kernels(runner: LlamaRunner, rows: int, top: int = 0) -> int:
    rows_bucket = batch_bucket(rows)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner._decode_forward(rows_bucket, 256, fused=runner._is_fused)
        torch.cuda.synchronize()
    events = [event for event in prof.events() if event.device_type.name == "CUDA"]
    if top:
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=top)
        print(table, flush=True)
    return len(events)


def accept_cost(model: Any, count: int) -> float:
    """Microseconds of host work per row per step in the decode loop's `_accept`."""
    harness = EngineHarness(model, torch.device("cuda"), count, 128 + 32 + 64, 512)
    spent = [0.0, 0]
    lock = threading.Lock()
    original = harness.loop._accept

    def timed(sequence: Any, choice: Any) -> bool:
        started = time.perf_counter()
        result = original(sequence, choice)
        with lock:
            spent[0] += time.perf_counter() - started
            spent[1] += 1
        return result

    harness.loop._accept = timed  # type: ignore[method-assign]
    try:
        harness.run(prompts(count, 128, 5), 8)
        spent[0], spent[1] = 0.0, 0
        result = harness.run(prompts(count, 128, 6), 32)
    finally:
        harness.close()
    print(f"  loop N={count}: {result}", flush=True)
    return 1e6 * spent[0] / max(1, spent[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--no-loop", action="store_true", help="skip the decode loop's host-cost runs")
    args = parser.parse_args()
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device), torch.__version__, flush=True)
    for shape in args.models.split(","):
        model = build_model(shape, device)
        weights = weight_bytes(model)
        bandwidth = hbm_bandwidth(device)
        floor = weights / bandwidth * 1000
        print(
            f"[{shape}] weights {weights / 1e9:.2f} GB, HBM {bandwidth / 1e12:.2f} TB/s, floor {floor:.3f} ms"
        )
        reference: dict[int, torch.Tensor] = {}
        with torch.inference_mode(), attention_backends():
            for name, fused, compiled, triton in (
                ("module", False, False, False),
                ("fused", True, False, False),
                ("compiled", True, True, False),
                ("triton", True, True, True),
            ):
                started = time.perf_counter()
                runner = make_runner(model, 64, 320, fused=fused, compiled=compiled, triton=triton)
                for rows in (1, 64):
                    milliseconds, logits = time_replays(runner, rows)
                    kernels = count_kernels(runner, rows, top=15 if triton and rows == 1 else 0)
                    if name == "module":
                        reference[rows] = logits
                    error = float((logits - reference[rows]).norm() / reference[rows].norm())
                    note = f", {100 * floor / milliseconds:.0f}% of floor" if rows == 1 else ""
                    print(
                        f"[{shape}] {name:8s} B={rows:3d}: {milliseconds:.3f} ms/step{note}, "
                        f"{kernels} kernels eager, rel. diff vs module {error:.4f}",
                        flush=True,
                    )
                    if triton and rows == 1:
                        chained = time_chained(runner)
                        print(
                            f"[{shape}] {name:8s} B=  1 chained (device tokens, host one step behind): "
                            f"{chained:.3f} ms/step, {100 * floor / chained:.0f}% of floor",
                            flush=True,
                        )
                print(f"[{shape}] {name} set-up + compile + capture: {time.perf_counter() - started:.1f} s")
                del runner
                torch.cuda.empty_cache()
        for count in () if args.no_loop else (64, 256):
            cost = accept_cost(model, count)
            print(f"[{shape}] _accept host cost N={count}: {cost:.1f} us/row", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
