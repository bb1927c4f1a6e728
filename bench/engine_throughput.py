"""Question: how fast does the embedded transformers engine generate, alone and with concurrent streams?

Setup: the model (default: the bundled SmolLM2-135M-Instruct, converted once into
the cache) is loaded once. Baselines, in the same run: Hugging Face
`model.generate()` greedy at batch 1, and statically batched at batch N (left
padding). Then ziggurat's `TransformersEngine` serves 1 stream and N concurrent
streams (greedy, same prompts, `max_tokens` each, EOS ignored is not possible
through the engine, so prompts ask for long answers and tokens are counted as
generated). Reported: generated tokens per second of wall time, and the ratio to
the matching baseline.

Command: `.venv/bin/python bench/engine_throughput.py [--model PATH] [--concurrency 8]
[--max-tokens 64] [--device auto]`. Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_metadata, write_result

from ziggurat.config import default_cache_dir
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams
from ziggurat.model.engines.transformers import TransformersEngine
from ziggurat.model.model_source import resolve_model

PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how a car engine works.",
    "Describe the history of the Roman Empire at length.",
    "Give a detailed guide to growing tomatoes.",
    "Explain photosynthesis step by step, in depth.",
    "Write a long essay about the ocean.",
    "Describe how computers store data, in detail.",
    "Tell a long tale about a dragon and a knight.",
]


def baseline_generate(model: Any, tokenizer: Any, prompts: list[str], max_tokens: int) -> dict[str, float]:
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    elapsed = time.perf_counter() - started
    generated = output[:, batch["input_ids"].shape[1] :]
    eos = tokenizer.eos_token_id
    tokens = int(sum(min(max_tokens, int((row != eos).sum().item()) + 1) for row in generated))
    return {"tokens": tokens, "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 2)}


async def engine_run(engine: TransformersEngine, prompts: list[str], max_tokens: int) -> dict[str, float]:
    async def one(index: int, prompt: str) -> int:
        request = GenerationRequest(
            request_id=f"b{index}",
            model="bench",
            messages=(ChatMessage("user", prompt),),
            params=SamplingParams(max_tokens=max_tokens, temperature=0),
        )
        async for event in engine.generate(request):
            if isinstance(event, GenerationEnd):
                return event.usage.completion_tokens
        return 0

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    elapsed = time.perf_counter() - started
    tokens = sum(counts)
    return {"tokens": tokens, "seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 2)}


async def main(args: argparse.Namespace) -> None:
    location = resolve_model(args.model, cache_dir=default_cache_dir(), progress=print)
    engine = TransformersEngine(
        model_path=location,
        served_name="bench",
        max_batch_size=args.concurrency,
        default_max_tokens=args.max_tokens,
        device=args.device,
    )
    await engine.start()
    loaded = engine._loaded  # the same weights for the baseline, so only the serving path differs
    assert loaded is not None
    prompts = (PROMPTS * ((args.concurrency // len(PROMPTS)) + 1))[: args.concurrency]
    await engine_run(engine, prompts[:2], 8)  # warm-up
    baseline_generate(loaded.model, loaded.tokenizer, prompts[:1], 8)
    single_base = baseline_generate(loaded.model, loaded.tokenizer, prompts[:1], args.max_tokens)
    single = await engine_run(engine, prompts[:1], args.max_tokens)
    batch_base = baseline_generate(loaded.model, loaded.tokenizer, prompts, args.max_tokens)
    batched = await engine_run(engine, prompts, args.max_tokens)
    await engine.aclose()
    write_result(
        "engine_throughput",
        {
            "question": "transformers engine tokens/s, 1 stream and N concurrent, vs HF generate()",
            **run_metadata(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": str(loaded.device),
            "torch_threads": torch.get_num_threads(),
            "settings": {**vars(args), "model": args.model or "bundled smollm2-135m-instruct"},
            "single_stream": {
                "hf_generate": single_base,
                "ziggurat": single,
                "ratio": round(single["tokens_per_s"] / single_base["tokens_per_s"], 2),
            },
            "concurrent": {
                "hf_generate_static_batch": batch_base,
                "ziggurat": batched,
                "ratio": round(batched["tokens_per_s"] / batch_base["tokens_per_s"], 2),
            },
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or .gguf (default: bundled SmolLM2)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    asyncio.run(main(parser.parse_args()))
