"""Question: how fast does the embedded transformers engine decode on a GPU, against HF `generate`?

Setup: random-weight models built from config (no download) shaped like
Llama-3.2-1B and Llama-3.1-8B, bf16 on one GPU. Every request has a 128-token
random prompt and generates exactly 128 tokens (no EOS: the generation config
has none). In the same run, per model:

- HBM bandwidth, measured with a large device-to-device copy (bytes read plus
  written over time), and the batch-1 floor = weight bytes / that bandwidth;
- baseline: Hugging Face `model.generate` with static batching (all prompts in
  one batch, greedy, default dynamic cache, SDPA), at 1, 64 and 256 requests;
- ziggurat: the engine's `DecodeLoop` with the batcher the engine would pick
  (the lean runner with its slot KV cache, chunked prefill and CUDA graphs),
  the same requests all submitted at once (1, 64, 256 concurrent);
- optionally transformers' own continuous batching (`generate_batch`) at 64.

Before timing, `triton_check.check` compares the Triton batch-1 decode kernels (and a whole
batch-1 step) with the reference path on the GPU and fails the run if they disagree.

Reported: output tokens/s (all requests' tokens over wall time), time to first
token and inter-token latency (p50 over requests / gaps), and batch-1 decode
speed as a percentage of the floor (floor time per token / measured p50 ITL).
Timestamps for ziggurat are taken on the decode thread when each token's event
is emitted, so HTTP, tokenizer and asyncio delivery are not included (the
detokenizer is a stub). Baseline timestamps come from a logits processor,
called once per generation step.

Command: `python bench/engine_throughput.py [--models 1b,8b] [--batches 1,64,256]
[--smoke] [--hf-cb] [--serial-too]`. `--serial-too` repeats our runs with the decode loop's
overlap off (`SlotBatcher.overlap`), the serial loop of the earlier passes.
Output: a table on stdout, JSON in bench/results/ (or --out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_check

from ziggurat.model.engine import GenerationEnd, GenerationEvent, TextDelta
from ziggurat.model.engines.transformers_batching import attention_backends
from ziggurat.model.engines.transformers_decode import DecodeLoop, SequenceState
from ziggurat.model.engines.transformers_runner_batch import make_batcher
from ziggurat.model.engines.transformers_sampling import SamplingSettings
from ziggurat.model.engines.transformers_text import OutputText

LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0}
SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
        rope={**LLAMA3_ROPE, "factor": 32.0, "original_max_position_embeddings": 8192},
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
        rope={**LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 8192},
    ),
    "smoke": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        rope={**LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 8192},
    ),
}


def build_model(shape: str, device: torch.device) -> LlamaForCausalLM:
    spec = dict(SHAPES[shape])
    rope = {**spec.pop("rope"), "rope_theta": 500000.0}
    config = LlamaConfig(
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters=rope,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **spec,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0, bos_token_id=None)
    return model


def weight_bytes(model: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if parameter.data_ptr() not in seen:
            seen.add(parameter.data_ptr())
            total += parameter.numel() * parameter.element_size()
    return total


def hbm_bandwidth(device: torch.device) -> float:
    """Bytes per second of a 4 GiB device-to-device copy, counting bytes read plus bytes written."""
    source = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device).random_()
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        target.copy_(source)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del source, target
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 / statistics.median(times)


class StepTimer(LogitsProcessor):
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores


def summary(started: float, per_request: list[list[float]], tokens: int) -> dict[str, float]:
    ended = max(times[-1] for times in per_request)
    ttft = [times[0] - started for times in per_request]
    gaps = [later - earlier for times in per_request for earlier, later in itertools.pairwise(times)]
    return {
        "tokens": tokens,
        "seconds": round(ended - started, 4),
        "tokens_per_s": round(tokens / (ended - started), 1),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 2),
        "ttft_max_ms": round(max(ttft) * 1000, 2),
        "itl_p50_ms": round(statistics.median(gaps) * 1000, 3) if gaps else 0.0,
        "itl_mean_ms": round(statistics.fmean(gaps) * 1000, 3) if gaps else 0.0,
    }


def prompts(count: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(10, 128000, (count, length), generator=generator)


def hf_generate(model: Any, batch: torch.Tensor, new_tokens: int) -> dict[str, float]:
    input_ids = batch.to(model.device)
    timer = StepTimer()
    torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([timer]),
        )
    torch.cuda.synchronize()
    tokens = int(output.shape[0] * (output.shape[1] - input_ids.shape[1]))
    return summary(started, [timer.times] * input_ids.shape[0], tokens)


def hf_continuous(model: Any, batch: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    inputs = [row.tolist() for row in batch]
    try:
        model.generate_batch(inputs=inputs[:4], generation_config=config, progress_bar=False)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        outputs = model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
        torch.cuda.synchronize()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    elapsed = time.perf_counter() - started
    tokens = sum(len(output.generated_tokens) for output in outputs.values())
    return {"tokens": tokens, "seconds": round(elapsed, 4), "tokens_per_s": round(tokens / elapsed, 1)}


def check_runner(model: Any, device: torch.device, prompt: int) -> list[float]:
    """Relative error of the runner's logits (prefill, then decode steps: eager, then graph
    replays) against the HF forward over the same tokens; bf16 should land near 1e-2."""
    plan = make_batcher(
        model,
        device=device,
        mode="auto",
        max_batch_size=4,
        context_length=prompt + 64,
        kv_cache_gib=None,
        chunk_tokens=prompt,
        cuda_graphs=True,
    )
    runner = plan.batcher._runner  # type: ignore[attr-defined]
    ids = prompts(1, prompt, 7)[0].tolist()
    errors = []
    with torch.inference_mode(), attention_backends():
        from ziggurat.model.engines.transformers_runner import PrefillChunk

        slot = runner.cache.allocate()
        slot = runner.cache.allocate()  # slot 1: rows of slot 0 are dummies in the decode step
        ours = runner.prefill([PrefillChunk(slot, 0, ids, True)])[0]
        for _ in range(5):
            reference = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
            errors.append(round(float((ours - reference).norm() / reference.norm()), 5))
            token = int(reference.argmax())
            ours = runner.decode([slot], [len(ids)], [token])[0]
            ids.append(token)
    return errors


class EngineHarness:
    """The engine's decode loop on its own thread, fed token ids directly."""

    def __init__(self, model: Any, device: torch.device, capacity: int, context: int, chunk: int) -> None:
        self.plan = make_batcher(
            model,
            device=device,
            mode="auto",
            max_batch_size=capacity,
            context_length=context,
            kv_cache_gib=None,
            chunk_tokens=chunk,
            cuda_graphs=True,
        )
        self.loop = DecodeLoop(batcher=self.plan.batcher, eos_token_ids=frozenset())
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def run(self, batch: torch.Tensor, new_tokens: int) -> dict[str, float]:
        count = batch.shape[0]
        times: list[list[float]] = [[] for _ in range(count)]
        ends: list[GenerationEnd] = []
        done = threading.Event()
        lock = threading.Lock()

        def emitter(index: int) -> Any:
            def emit(event: GenerationEvent) -> None:
                if isinstance(event, TextDelta):
                    times[index].append(time.perf_counter())
                elif isinstance(event, GenerationEnd):
                    with lock:
                        ends.append(event)
                        if len(ends) == count:
                            done.set()

            return emit

        sequences = [
            SequenceState(
                request_id=f"r{index}",
                prompt_ids=batch[index].tolist(),
                max_new_tokens=new_tokens,
                sampling=SamplingSettings(temperature=0.0),
                text=OutputText(lambda ids: "x" * len(ids), ()),
                emit=emitter(index),
            )
            for index in range(count)
        ]
        started = time.perf_counter()
        for sequence in sequences:
            self.loop.submit(sequence)
        if not done.wait(600):
            raise RuntimeError("the engine did not finish")
        errors = [end.error for end in ends if end.error]
        if errors:
            raise RuntimeError(errors[0])
        tokens = sum(end.usage.completion_tokens for end in ends)
        return summary(started, times, tokens)

    def close(self) -> None:
        self.loop.stop()
        self.thread.join()


def bench_model(shape: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = build_model(shape, device)
    weights = weight_bytes(model)
    bandwidth = hbm_bandwidth(device)
    floor_ms = weights / bandwidth * 1000
    result: dict[str, Any] = {
        "shape": shape,
        "weight_bytes": weights,
        "hbm_bytes_per_s": round(bandwidth),
        "batch1_floor_ms": round(floor_ms, 3),
        "hf_generate": {},
        "ziggurat": {},
    }
    print(
        f"[{shape}] weights {weights / 1e9:.2f} GB, HBM {bandwidth / 1e12:.2f} TB/s, "
        f"floor {floor_ms:.3f} ms/token",
        flush=True,
    )
    result["triton_check"] = triton_check.check(model, device)
    result["runner_vs_hf_rel_error"] = check_runner(model, device, args.prompt)
    print(
        f"[{shape}] runner vs HF logits, relative error per step: {result['runner_vs_hf_rel_error']}",
        flush=True,
    )
    with attention_backends():
        hf_generate(model, prompts(1, args.prompt, 0), 4)  # warm-up
        for count in args.batches:
            result["hf_generate"][count] = hf_generate(model, prompts(count, args.prompt, count), args.new)
            print(f"[{shape}] hf generate  B={count}: {result['hf_generate'][count]}", flush=True)
    context = args.prompt + args.new + 64
    harness = EngineHarness(model, device, max(args.batches), context, args.chunk)
    result["path"] = harness.plan.path
    try:
        for count in args.batches:
            harness.run(prompts(count, args.prompt, 1000 + count), 8)  # warm-up: captures this size's graphs
            result["ziggurat"][count] = harness.run(prompts(count, args.prompt, count), args.new)
            print(f"[{shape}] ziggurat     B={count}: {result['ziggurat'][count]}", flush=True)
        if args.serial_too:  # the same engine with the decode loop's overlap off: same-run before/after
            harness.plan.batcher.overlap = False  # type: ignore[attr-defined]
            result["ziggurat_serial"] = {}
            for count in args.batches:
                result["ziggurat_serial"][count] = harness.run(prompts(count, args.prompt, count), args.new)
                print(f"[{shape}] serial loop  B={count}: {result['ziggurat_serial'][count]}", flush=True)
    finally:
        harness.close()
    del harness
    torch.cuda.empty_cache()
    if 1 in args.batches:
        for name in ("hf_generate", "ziggurat"):
            itl = result[name][1]["itl_p50_ms"]
            result[f"{name}_batch1_floor_pct"] = round(100 * floor_ms / itl, 1) if itl else None
    if args.hf_cb:
        count = 64 if 64 in args.batches else max(args.batches)
        with attention_backends():
            result["hf_continuous_batching"] = {
                count: hf_continuous(model, prompts(count, args.prompt, count), args.new)
            }
        print(f"[{shape}] hf generate_batch B={count}: {result['hf_continuous_batching'][count]}", flush=True)
    del model
    torch.cuda.empty_cache()
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | B | HF generate tok/s | ziggurat tok/s | ratio "
        "| TTFT p50 HF / ours (ms) | ITL p50 HF / ours (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for count, ours in result["ziggurat"].items():
            base = result["hf_generate"][count]
            lines.append(
                f"| {result['shape']} | {count} | {base['tokens_per_s']:,} | {ours['tokens_per_s']:,} | "
                f"{ours['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
                f"{base['ttft_p50_ms']} / {ours['ttft_p50_ms']} | "
                f"{base['itl_p50_ms']} / {ours['itl_p50_ms']} |"
            )
    for result in results:
        lines.append(
            f"{result['shape']}: floor {result['batch1_floor_ms']} ms/token; batch-1 decode at "
            f"{result.get('ziggurat_batch1_floor_pct')}% of floor "
            f"(HF generate: {result.get('hf_generate_batch1_floor_pct')}%); "
            f"HF generate_batch: {result.get('hf_continuous_batching')}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--hf-cb", action="store_true", help="also time transformers' generate_batch")
    parser.add_argument(
        "--serial-too", action="store_true", help="also time the engine with the loop's overlap off"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny model, short runs: checks the setup")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.batches = [int(value) for value in args.batches.split(",")]
    shapes = ["smoke"] if args.smoke else args.models.split(",")
    device = torch.device("cuda")
    meta = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(meta), flush=True)
    results = [bench_model(shape, args, device) for shape in shapes]
    out = args.out or Path(__file__).parent / "results" / f"engine_throughput_{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"meta": meta, "args": vars(args) | {"out": str(out)}, "results": results}, indent=1)
    )
    print(table(results))


if __name__ == "__main__":
    main()
