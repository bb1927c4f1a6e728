"""Question: what does a response-cache lookup add to a request, exact and semantic, in memory and in Redis?

Setup: one process, one task at a time (latency, not throughput). The cache is filled with
ENTRIES answers (~1 KiB each) to distinct deterministic questions, all in one scope. We time
SAMPLES lookups of each kind:
- exact hit and exact miss, on `MemoryKeyValueStore` and on `RedisKeyValueStore`
  (Redis at ZIGGURAT_TEST_REDIS_URL, default 127.0.0.1:6379);
- semantic miss (the common case: embed the prompt with all-MiniLM-L6-v2 on the CPU, search
  ENTRIES vectors, find nothing close enough) and semantic hit (a reworded stored question),
  on the memory and the Redis vector index.
Baselines in the same run: a bare redis-py GET of the same value (for the Redis store) and one
bare `embed()` call of the embedder (for semantic lookups).

Command: `.venv/bin/python bench/cache_lookup.py [--entries 2000] [--samples 300]`
(needs the `semantic` extra). Output: JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_metadata, write_result

from ziggurat.connection.cache.embeddings import MiniLMEmbedder
from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore
from ziggurat.connection.cache.response import ResponseCache
from ziggurat.connection.cache.semantic import MemoryVectorIndex, RedisVectorIndex, SemanticMatcher
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams, Usage

ANSWER = "Paris is the capital of France. " * 32
END = GenerationEnd("stop", Usage(20, 200))
TOPICS = ["France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Canada", "India", "Spain"]


def ask(question: str) -> GenerationRequest:
    return GenerationRequest(
        request_id="bench",
        model="bench-model",
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", question)),
        params=SamplingParams(temperature=0, max_tokens=256),
    )


def question(number: int) -> str:
    return f"Question {number}: what is the population of {TOPICS[number % len(TOPICS)]} in year {number}?"


async def timed(samples: int, call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    durations = []
    for sample in range(samples):
        started = time.perf_counter()
        await call(sample)
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    return {
        "p50_ms": round(statistics.median(durations), 4),
        "p99_ms": round(durations[int(len(durations) * 0.99) - 1], 4),
    }


async def fill(cache: ResponseCache, entries: int) -> None:
    for number in range(entries):
        await cache.store(ask(question(number)), scope="shared", text=ANSWER, end=END)


async def measure_exact(name: str, store: KeyValueStore, args: argparse.Namespace) -> dict[str, Any]:
    cache = ResponseCache(store, ttl_s=3600)
    await fill(cache, args.entries)
    hit = await timed(args.samples, lambda n: cache.lookup(ask(question(n % args.entries)), scope="shared"))
    miss = await timed(args.samples, lambda n: cache.lookup(ask(f"unseen {n}"), scope="shared"))
    assert cache.hits == args.samples and cache.misses == args.samples, name
    return {"exact_hit": hit, "exact_miss": miss}


async def measure_semantic(
    cache: ResponseCache, embedder: MiniLMEmbedder, args: argparse.Namespace
) -> dict[str, Any]:
    await fill(cache, args.entries)
    baseline = await timed(args.samples, lambda n: embedder.embed([f"How do I bake bread, take {n}?"]))
    miss = await timed(
        args.samples, lambda n: cache.lookup(ask(f"How do I bake bread, take {n}?"), scope="shared")
    )
    before = cache.semantic_hits
    reworded = [question(n).replace("what is", "tell me") for n in range(args.samples)]
    hit = await timed(args.samples, lambda n: cache.lookup(ask(reworded[n]), scope="shared"))
    return {
        "bare_embed": baseline,
        "semantic_miss": miss,
        "semantic_hit": hit,
        "semantic_hits_found": cache.semantic_hits - before,
        "miss_ratio_to_bare_embed": round(miss["p50_ms"] / baseline["p50_ms"], 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("ZIGGURAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.from_url(url)
    prefix = f"zigbench-{secrets.token_hex(4)}"
    results: dict[str, Any] = {}
    try:
        await client.set(f"{prefix}:baseline", ANSWER.encode())
        results["redis_bare_get"] = await timed(args.samples, lambda n: client.get(f"{prefix}:baseline"))
        results["memory"] = await measure_exact("memory", MemoryKeyValueStore(args.entries * 2), args)
        results["redis"] = await measure_exact("redis", RedisKeyValueStore(client, prefix), args)
        results["redis"]["hit_ratio_to_bare_get"] = round(
            results["redis"]["exact_hit"]["p50_ms"] / results["redis_bare_get"]["p50_ms"], 2
        )
        embedder = MiniLMEmbedder()
        await embedder.start()
        memory_index = MemoryVectorIndex(max_entries=args.entries, max_total_entries=args.entries)
        redis_index = RedisVectorIndex(
            client, prefix, max_entries=args.entries, max_cached_entries=args.entries
        )
        for name, store, index in (
            ("memory_semantic", MemoryKeyValueStore(args.entries * 2), memory_index),
            ("redis_semantic", RedisKeyValueStore(client, prefix + "-s"), redis_index),
        ):
            matcher = SemanticMatcher(embedder, index, threshold=0.9, memo_size=1)
            results[name] = await measure_semantic(
                ResponseCache(store, ttl_s=3600, semantic=matcher), embedder, args
            )
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=300)
    arguments = parser.parse_args()
    numbers = asyncio.run(main(arguments))
    write_result(
        "cache_lookup",
        {**run_metadata(), "settings": vars(arguments), "results": numbers},
    )
