"""OpenAIEngine against a small fake OpenAI-compatible server (aiohttp.web on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from tests.model.engines.fake_openai import (
    API_KEY,
    HELLO_EVENTS,
    HELLO_TEXT,
    REMOTE_MODEL,
    USAGE_CHUNK,
    FakeOpenAI,
    running_fake,
)
from ziggurat.errors import InvalidRequest, UpstreamFailed
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    Usage,
)
from ziggurat.model.engines.openai import OpenAIEngine
from ziggurat.model.engines.openai_wire import SseDecoder


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake() as state:
        yield state


def make_engine(base_url: str, **overrides: Any) -> OpenAIEngine:
    options: dict[str, Any] = {
        "base_url": base_url,
        "api_key": API_KEY,
        "remote_model": REMOTE_MODEL,
        "served_name": "my-model",
        "max_concurrency": 4,
        "timeout_s": 5.0,
        "context_length": 4096,
        "default_max_tokens": 64,
    }
    options.update(overrides)
    return OpenAIEngine(**options)


@pytest.fixture
async def engine(fake: FakeOpenAI) -> AsyncIterator[OpenAIEngine]:
    engine = make_engine(fake.base_url)
    await engine.start()
    yield engine
    await engine.aclose()


def make_request(**params: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="req-1",
        model="my-model",
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello to the world")),
        params=SamplingParams(**params),
    )


async def collect(engine: OpenAIEngine, request: GenerationRequest) -> tuple[list[GenerationEvent], str]:
    events = [event async for event in engine.generate(request)]
    assert isinstance(events[-1], GenerationEnd)
    assert all(isinstance(event, TextDelta) and event.text for event in events[:-1])
    return events, "".join(event.text for event in events if isinstance(event, TextDelta))


async def test_streams_deltas_finish_reason_and_usage(engine: OpenAIEngine) -> None:
    assert engine.is_ready
    events, text = await collect(engine, make_request())
    assert text == HELLO_TEXT
    assert events[-1] == GenerationEnd(finish_reason="stop", usage=Usage(12, 5))


async def test_sends_sampling_params_model_and_api_key(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    params = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": ("\n\n", "END"), "seed": 7}
    await collect(engine, make_request(**params))
    body = fake.bodies[-1]
    assert body["model"] == REMOTE_MODEL
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello to the world"},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 50)
    assert (body["stop"], body["seed"]) == (["\n\n", "END"], 7)
    assert fake.headers[-1]["Authorization"] == f"Bearer {API_KEY}"
    assert fake.headers[-1]["X-Request-Id"] == "req-1"


async def test_defaults_max_tokens_and_omits_unset_fields(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    await collect(engine, make_request())
    body = fake.bodies[-1]
    assert body["max_tokens"] == 64
    assert "stop" not in body and "seed" not in body


async def test_reuses_the_connection(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    await collect(engine, make_request())
    await collect(engine, make_request())
    assert fake.peers[0] == fake.peers[1]


@pytest.mark.parametrize(("scenario", "expected"), [("length", "length"), ("content_filter", "stop")])
async def test_maps_finish_reasons(
    engine: OpenAIEngine, fake: FakeOpenAI, scenario: str, expected: str
) -> None:
    fake.scenario = scenario
    events, text = await collect(engine, make_request())
    assert text == "Hel"
    end = events[-1]
    assert isinstance(end, GenerationEnd) and end.finish_reason == expected


async def test_estimates_usage_when_the_server_sends_none(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    fake.scenario = "no_usage"
    events, text = await collect(engine, make_request())
    assert text == HELLO_TEXT
    prompt_chars = len("Be brief.") + len("Say hello to the world")
    expected = Usage(-(-prompt_chars // 4), -(-len(HELLO_TEXT) // 4))
    assert events[-1] == GenerationEnd(finish_reason="stop", usage=expected)


async def test_token_counts_are_an_estimate_that_errs_high(engine: OpenAIEngine) -> None:
    messages = make_request().messages
    assert await engine.count_tokens(messages) >= sum(len(m.content) for m in messages) // 4


@pytest.mark.parametrize("scenario", ["http_500", "http_401", "http_502_html"])
async def test_http_errors_raise_upstream_failed_without_the_key(
    engine: OpenAIEngine, fake: FakeOpenAI, scenario: str
) -> None:
    fake.scenario = scenario
    with pytest.raises(UpstreamFailed) as caught:
        await collect(engine, make_request())
    message = caught.value.message
    assert f"HTTP {scenario.split('_')[1]}" in message
    assert API_KEY not in message and API_KEY not in str(caught.value)
    assert ("CUDA out of memory" in message) == (scenario == "http_500")
    assert not engine.is_ready


async def test_bad_input_400_is_an_invalid_request(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    fake.scenario = "http_400"
    with pytest.raises(InvalidRequest, match="maximum context length is 4096 tokens"):
        await collect(engine, make_request())
    assert engine.is_ready


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [("mid_error", "engine crashed"), ("malformed", "malformed"), ("truncated", "before finishing")],
)
async def test_broken_streams_raise_upstream_failed(
    engine: OpenAIEngine, fake: FakeOpenAI, scenario: str, reason: str
) -> None:
    fake.scenario = scenario
    with pytest.raises(UpstreamFailed, match=reason):
        await collect(engine, make_request())


async def test_connection_refused_does_not_fail_start() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_engine(f"http://127.0.0.1:{port}/v1")
    await engine.start()
    try:
        assert not engine.is_ready
        with pytest.raises(UpstreamFailed, match="unreachable") as caught:
            await collect(engine, make_request())
        assert str(port) not in caught.value.message
        assert not await engine.check_health()
    finally:
        await engine.aclose()


async def test_health_requires_the_model_to_be_listed(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    assert await engine.check_health()
    fake.listed_models = ["other-model"]
    assert not await engine.check_health()
    assert not engine.is_ready
    await collect(engine, make_request())
    assert engine.is_ready


async def test_cancelling_the_consumer_closes_the_connection(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    fake.scenario = "endless"
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(make_request()):
            first_delta.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), 5)


async def test_closing_the_iterator_closes_the_connection(engine: OpenAIEngine, fake: FakeOpenAI) -> None:
    fake.scenario = "endless"
    stream = engine.generate(make_request())
    assert isinstance(stream, AsyncGenerator)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    await asyncio.wait_for(fake.disconnected.wait(), 5)


def test_info_and_capacity_hide_credentials() -> None:
    engine = make_engine("http://user:hunter2@10.0.0.5:8000/v1?key=abc")
    assert engine.capacity == 4
    assert engine.info.name == "my-model" and engine.info.engine == "openai"
    assert engine.info.context_length == 4096
    assert engine.info.description == "relayed to http://10.0.0.5:8000/v1"


def test_decoder_handles_any_split() -> None:
    stream = b"".join([*HELLO_EVENTS, b"event: x\nid: 3\n\n", USAGE_CHUNK]) + b"data: [DONE]"
    whole = SseDecoder()
    expected = [*whole.feed(stream), *whole.feed(b"\n")]
    assert expected[-1] == b"[DONE]" and len(expected) == 6
    decoder = SseDecoder()
    pieces: list[bytes] = []
    for index in range(len(stream)):
        pieces.extend(decoder.feed(stream[index : index + 1]))
    assert [*pieces, *decoder.feed(b"\n")] == expected
