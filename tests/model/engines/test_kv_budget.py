"""The slot KV cache: sized from the memory budget, admission only when a slot is free, usage reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.model.engines.runner_helpers import LoopThread, Recorder, load_tiny, plan
from ziggurat.errors import ConfigurationError
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams
from ziggurat.model.engines.transformers import TransformersEngine
from ziggurat.model.engines.transformers_kv import GIB, SlotKVCache, bytes_per_token, plan_slots

pytestmark = pytest.mark.model


def test_slots_are_what_the_budget_holds_up_to_the_batch_size() -> None:
    token_bytes = bytes_per_token(layers=2, kv_heads=2, head_dim=16, dtype=torch.float32)
    assert token_bytes == 2 * 2 * 2 * 16 * 4
    per_slot = token_bytes * 101
    assert plan_slots(token_bytes=token_bytes, max_slots=8, max_len=100, budget_bytes=3 * per_slot) == 3
    assert plan_slots(token_bytes=token_bytes, max_slots=2, max_len=100, budget_bytes=3 * per_slot) == 2
    with pytest.raises(ConfigurationError, match="kv_cache_gib"):
        plan_slots(token_bytes=token_bytes, max_slots=2, max_len=100, budget_bytes=per_slot - 1)


def test_usage_counts_filled_positions_and_freed_slots_are_reused_lowest_first() -> None:
    cache = SlotKVCache(
        layers=1, kv_heads=1, head_dim=4, slots=3, max_len=10, dtype=torch.float32, device=torch.device("cpu")
    )
    first, second = cache.allocate(), cache.allocate()
    cache.lengths[first], cache.lengths[second] = 6, 3
    assert cache.usage == pytest.approx(9 / 30)
    assert cache.highest_used == 2
    cache.release(first)
    assert cache.allocate() == first
    assert cache.usage == pytest.approx(3 / 30)


def test_a_request_waits_until_a_slot_is_free(tiny_llama_path: Path) -> None:
    model: Any = load_tiny(tiny_llama_path)
    token_bytes = bytes_per_token(2, 2, 16, torch.float32)
    two_slots = 2 * token_bytes * 65 / GIB
    batch_plan = plan(model, slots=8, context=64, gib=two_slots)
    assert batch_plan.capacity == 2
    recorder = Recorder()
    with LoopThread(batch_plan) as loop:
        sequences = [recorder.sequence(f"s{index}", [5 + index, 6, 7], 10) for index in range(3)]
        for sequence in sequences:
            loop.submit(sequence)
        recorder.wait("s0", "s1", "s2")
        assert loop.max_batch_observed == 2
    assert recorder.tokens_before("s0", ("s2", "token")) == 10  # s2 started only after a slot was freed


async def test_engine_capacity_and_stats_follow_the_slot_cache(tiny_llama_path: Path) -> None:
    token_bytes = bytes_per_token(2, 2, 16, torch.float32)
    engine = TransformersEngine(
        model_path=str(tiny_llama_path),
        served_name="tiny",
        max_batch_size=8,
        default_max_tokens=16,
        context_length=64,
        kv_cache_gib=3 * token_bytes * 65 / GIB,
    )
    await engine.start()
    try:
        assert engine.batch_path == "runner"
        assert engine.capacity == 3
        request = GenerationRequest(
            request_id="r",
            model="tiny",
            messages=(ChatMessage(role="user", content="hello"),),
            params=SamplingParams(max_tokens=5, temperature=0),
        )
        events = [event async for event in engine.generate(request)]
        assert isinstance(events[-1], GenerationEnd)
        assert engine.generated_tokens == events[-1].usage.completion_tokens
        async with asyncio.timeout(10):
            while engine.stats().kv_cache_usage != 0.0:  # published at the end of the round  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await engine.aclose()
