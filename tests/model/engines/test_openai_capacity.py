"""The remote engine's capacity from its servers' own metrics and health (fake vLLM/SGLang servers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.model.engines.fake_vllm import MODEL, FakeVLLM, running_vllm
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams, TextDelta
from ziggurat.model.engines.openai import OpenAIEngine
from ziggurat.model.engines.openai_capacity import LoadPolicy, UpstreamLoad, parse_load
from ziggurat.model.engines.openai_endpoints import EndpointConfig
from ziggurat.service.metrics import Metrics

POLL_S = 0.05


def engine_for(
    *fakes: FakeVLLM, max_concurrency: int = 8, server_max_concurrency: int | None = None, **endpoint: Any
) -> OpenAIEngine:
    """`server_max_concurrency`: each server's own limit (`EndpointConfig.max_concurrency`)."""
    if server_max_concurrency is not None:
        endpoint["max_concurrency"] = server_max_concurrency
    return OpenAIEngine(
        endpoints=[EndpointConfig(fake.base_url, **endpoint) for fake in fakes],
        remote_model=MODEL,
        served_name="served",
        max_concurrency=max_concurrency,
        timeout_s=5.0,
        load=LoadPolicy(interval_s=POLL_S, max_kv_cache_usage=0.9),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeVLLM]:
    async with running_vllm() as state:
        yield state


async def until(predicate: Any, timeout_s: float = 3.0) -> None:
    """Wait for state another task changes on its own timer (the poller's), which signals nothing."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def request(**params: Any) -> GenerationRequest:
    return GenerationRequest("r", "served", (ChatMessage("user", "Hi"),), SamplingParams(**params))


def test_parses_vllm_metrics_for_its_model_only() -> None:
    text = """
# HELP vllm:num_requests_running Number of requests.
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_running{engine="0",model_name="other"} 50.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
vllm:num_requests_running_total_bogus 9
"""
    # Data-parallel engines add up; the V1 KV name wins over the older one; the fullest engine counts.
    assert parse_load(text, "m") == UpstreamLoad(running=5, waiting=5, kv_cache_usage=0.75)


def test_parses_sglang_metrics_counting_tensor_parallel_ranks_once() -> None:
    text = (
        'sglang:num_running_reqs{model_name="m",tp_rank="0"} 6.0\n'
        'sglang:num_running_reqs{model_name="m",tp_rank="1"} 6.0\n'
        'sglang:num_queue_reqs{model_name="m",tp_rank="0"} 2\n'
        'sglang:token_usage{model_name="m",tp_rank="0"} 0.91\n'
    )
    assert parse_load(text, "m") == UpstreamLoad(running=6, waiting=2, kv_cache_usage=0.91)


def test_metrics_under_another_model_name_still_count_and_unknown_ones_do_not() -> None:
    assert parse_load('vllm:num_requests_waiting{model_name="alias"} 3\n', "m") == UpstreamLoad(None, 3, None)
    assert parse_load("process_cpu_seconds_total 12.5\nvllm:num_requests_waiting{} nan_x\n", "m") is None


async def test_waiting_requests_lower_capacity_and_it_recovers(fake: FakeVLLM) -> None:
    engine = engine_for(fake)
    await engine.start()
    try:
        assert engine.capacity == 8 and engine.available_capacity == 8
        fake.waiting = 6
        await until(lambda: engine.available_capacity == 2)
        stats = engine.stats()
        assert stats.waiting == 6 and stats.kv_cache_usage == pytest.approx(0.1)
        fake.waiting = 20
        await until(lambda: engine.available_capacity == 0)
        fake.waiting = 0
        await until(lambda: engine.available_capacity == 8)
    finally:
        await engine.aclose()


async def test_a_full_kv_cache_stops_new_requests_but_keeps_running_ones(fake: FakeVLLM) -> None:
    fake.hold = True
    engine = engine_for(fake)
    await engine.start()
    try:
        streams = [engine.generate(request()) for _ in range(3)]
        for stream in streams:
            assert isinstance(await anext(stream), TextDelta)
        fake.kv_cache_usage = 0.95
        await until(lambda: engine.available_capacity == 0)  # nothing new
        assert engine.stats().running == 3
        fake.release.set()
        for stream in streams:  # the running ones finish
            events = [event async for event in stream]
            assert isinstance(events[-1], GenerationEnd) and events[-1].finish_reason == "stop"
        fake.kv_cache_usage = 0.3
        await until(lambda: engine.available_capacity == 8)
    finally:
        await engine.aclose()


async def test_capacity_changes_wake_a_waiter_without_polling(fake: FakeVLLM) -> None:
    engine = engine_for(fake)
    await engine.start()
    try:
        changed = asyncio.create_task(engine.capacity_changed())
        await asyncio.sleep(3 * POLL_S)
        assert not changed.done()  # nothing changed: the waiter sleeps
        fake.waiting = 3
        await asyncio.wait_for(changed, 2.0)
        assert engine.available_capacity == 5
    finally:
        await engine.aclose()


async def test_an_unhealthy_endpoint_is_skipped_and_its_share_of_capacity_goes() -> None:
    async with AsyncExitStack() as stack:
        sick = await stack.enter_async_context(running_vllm())
        well = await stack.enter_async_context(running_vllm())
        engine = engine_for(sick, well, max_concurrency=8, server_max_concurrency=4)
        await engine.start()
        try:
            assert engine.available_capacity == 8
            sick.healthy = False
            await until(lambda: engine.available_capacity == 4)
            for _ in range(6):
                events = [event async for event in engine.generate(request())]
                assert isinstance(events[-1], GenerationEnd) and events[-1].finish_reason == "stop"
            assert sick.total_streams == 0 and well.total_streams == 6
            assert engine.is_ready
            sick.healthy = True
            await until(lambda: engine.available_capacity == 8)
        finally:
            await engine.aclose()


async def test_a_full_endpoint_is_passed_over_for_one_with_room() -> None:
    async with AsyncExitStack() as stack:
        busy = await stack.enter_async_context(running_vllm(hold=True))
        idle = await stack.enter_async_context(running_vllm())
        engine = OpenAIEngine(
            endpoints=[EndpointConfig(busy.base_url, weight=100), EndpointConfig(idle.base_url)],
            remote_model=MODEL,
            served_name="served",
            max_concurrency=4,
            timeout_s=5.0,
            load=LoadPolicy(interval_s=POLL_S),
        )
        await engine.start()
        try:
            busy.waiting = 2  # its limit: 4 - 2 = 2
            await until(lambda: engine.endpoints[0].limit == 2)
            held = [engine.generate(request()) for _ in range(2)]
            for stream in held:
                await anext(stream)
            assert busy.open_streams == 2
            for _ in range(3):
                [event async for event in engine.generate(request())]
            assert idle.total_streams == 3 and busy.total_streams == 2
            busy.release.set()
            for stream in held:
                [event async for event in stream]
        finally:
            await engine.aclose()


async def test_servers_without_metrics_keep_the_configured_capacity() -> None:
    async with running_vllm(has_metrics=False) as plain:
        engine = engine_for(plain)
        await engine.start()
        try:
            await asyncio.sleep(4 * POLL_S)
            assert engine.available_capacity == 8
            assert engine.stats().running == 0 and engine.stats().waiting is None
        finally:
            await engine.aclose()


async def test_sglang_metrics_are_read_too() -> None:
    async with running_vllm(metric_style="sglang", waiting=5) as sglang:
        engine = engine_for(sglang)
        await engine.start()
        try:
            assert engine.available_capacity == 3
            sglang.kv_cache_usage = 0.92
            await until(lambda: engine.available_capacity == 0)
        finally:
            await engine.aclose()


async def test_relays_sampling_controls_and_maps_upstream_logprobs(fake: FakeVLLM) -> None:
    engine = engine_for(fake)
    await engine.start()
    try:
        params: dict[str, Any] = {
            "top_k": 40,
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "stop_token_ids": (7, 9),
            "logprobs": True,
            "top_logprobs": 2,
        }
        events = [event async for event in engine.generate(request(**params))]
        body = fake.bodies[-1]
        assert {key: body[key] for key in params} == {**params, "stop_token_ids": [7, 9]}
        deltas = [event for event in events if isinstance(event, TextDelta)]
        assert [d.logprobs[0].token for d in deltas if d.logprobs] == ["Hello", " there", ",", " 世界", "!"]
        first = deltas[0].logprobs
        assert (
            first is not None
            and first[0].logprob == -0.25
            and first[0].top == (("Hello", -0.25), ("x", -2.5))
        )
        plain = [event async for event in engine.generate(request())]
        assert all(event.logprobs is None for event in plain if isinstance(event, TextDelta))
        assert "logprobs" not in fake.bodies[-1] and "top_k" not in fake.bodies[-1]
    finally:
        await engine.aclose()


async def test_each_server_is_in_the_metrics_with_its_health_load_and_our_requests() -> None:
    async with AsyncExitStack() as stack:
        sick = await stack.enter_async_context(running_vllm())
        well = await stack.enter_async_context(running_vllm())
        well.hold, well.waiting = True, 2
        engine = engine_for(sick, well, max_concurrency=8, server_max_concurrency=4)
        metrics = Metrics()
        metrics.watch_engines([engine])
        await engine.start()
        try:
            sick.healthy = False
            await until(lambda: engine.available_capacity == 2)  # the sick one's share gone, 2 queued
            stream = engine.generate(request())
            assert isinstance(await anext(stream), TextDelta)  # held open on the well server
            scraped = {
                (sample.name, sample.labels["endpoint"]): sample.value
                for family in text_string_to_metric_families(metrics.render().decode())
                for sample in family.samples
                if sample.name.startswith("ziggurat_engine_endpoint_")
            }
            sick_url, well_url = (reading.endpoint for reading in engine.endpoint_stats())
            assert "@" not in well_url and well_url.startswith("http://127.0.0.1:")
            assert scraped[("ziggurat_engine_endpoint_up", sick_url)] == 0
            assert scraped[("ziggurat_engine_endpoint_up", well_url)] == 1
            assert scraped[("ziggurat_engine_endpoint_in_flight", well_url)] == 1
            assert scraped[("ziggurat_engine_endpoint_in_flight", sick_url)] == 0
            assert scraped[("ziggurat_engine_endpoint_waiting", well_url)] == 2
            assert scraped[("ziggurat_engine_endpoint_limit", well_url)] == 2  # 4 minus the 2 it queues
            assert scraped[("ziggurat_engine_endpoint_breaker_open", well_url)] == 0
            well.release.set()
            events = [event async for event in stream]
            assert isinstance(events[-1], GenerationEnd)
        finally:
            await engine.aclose()
