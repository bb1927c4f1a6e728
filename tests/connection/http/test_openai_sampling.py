"""Sampling controls and logprobs through `/v1/chat/completions`, read with the official `openai` SDK.

The app (in process) relays to a fake vLLM-like server, so the whole path runs:
request schema → job → worker → remote engine → upstream logprobs → stream entries → OpenAI chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.connection.http.inprocess import app_client, app_settings, assert_error, cheap_passwords, sign_up
from tests.model.engines.fake_vllm import MODEL, FakeVLLM, running_vllm
from ziggurat.app import build_app

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
ANSWER = "Hello there, 世界!"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeVLLM]:
    async with running_vllm() as fake:
        yield fake


@pytest.fixture
async def client(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, upstream: FakeVLLM
) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    engine = {"kind": "openai", "openai_base_url": upstream.base_url, "model": MODEL, "served_name": "remote"}
    settings = app_settings(tmp_path, database_url, engine=engine, conversations={"auto_title": False})
    async with app_client(build_app(settings)) as client:
        yield client


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    session = await sign_up(client, "lp@example.com")
    return openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key=session.access_token,
        http_client=client,  # type: ignore[arg-type]  # the SDK's stubs name its vendored httpx
        max_retries=0,
    )


async def test_streamed_logprobs_parse_with_the_sdk(sdk: openai.AsyncOpenAI, upstream: FakeVLLM) -> None:
    stream = await sdk.chat.completions.create(
        model="remote", messages=MESSAGES, stream=True, logprobs=True, top_logprobs=2
    )
    tokens: list[openai.types.chat.ChatCompletionTokenLogprob] = []
    text = ""
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
                tokens.extend(chunk.choices[0].logprobs.content)
    assert text == ANSWER
    assert "".join(token.token for token in tokens) == ANSWER
    assert tokens[3].token == " 世界" and tokens[3].bytes == list(" 世界".encode())
    assert tokens[0].logprob == -0.25
    assert [(alt.token, alt.logprob) for alt in tokens[0].top_logprobs] == [("Hello", -0.25), ("x", -2.5)]
    assert upstream.bodies[-1]["logprobs"] is True and upstream.bodies[-1]["top_logprobs"] == 2


async def test_non_streamed_logprobs_and_sampling_controls(
    sdk: openai.AsyncOpenAI, upstream: FakeVLLM
) -> None:
    completion = await sdk.chat.completions.create(
        model="remote",
        messages=MESSAGES,
        logprobs=True,
        frequency_penalty=0.5,
        presence_penalty=-1.0,
        extra_body={"top_k": 20, "repetition_penalty": 1.2, "stop_token_ids": [2, 3]},
    )
    choice = completion.choices[0]
    assert choice.message.content == ANSWER
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [token.token for token in choice.logprobs.content] == ["Hello", " there", ",", " 世界", "!"]
    assert all(token.top_logprobs == [] for token in choice.logprobs.content)
    sent = upstream.bodies[-1]
    assert (sent["top_k"], sent["repetition_penalty"], sent["stop_token_ids"]) == (20, 1.2, [2, 3])
    assert (sent["frequency_penalty"], sent["presence_penalty"]) == (0.5, -1.0)
    assert "top_logprobs" not in sent


async def test_without_logprobs_the_chunks_say_null(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="remote", messages=MESSAGES)
    assert completion.choices[0].logprobs is None
    stream = await sdk.chat.completions.create(model="remote", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream if chunk.choices]
    assert chunks and all(chunk.choices[0].logprobs is None for chunk in chunks)


async def test_a_cached_answer_is_not_served_to_a_request_for_logprobs(
    sdk: openai.AsyncOpenAI, upstream: FakeVLLM
) -> None:
    first = await sdk.chat.completions.with_raw_response.create(
        model="remote", messages=MESSAGES, temperature=0
    )
    again = await sdk.chat.completions.with_raw_response.create(
        model="remote", messages=MESSAGES, temperature=0
    )
    assert (first.headers["x-ziggurat-cache"], again.headers["x-ziggurat-cache"]) == ("miss", "hit")
    with_logprobs = await sdk.chat.completions.with_raw_response.create(
        model="remote", messages=MESSAGES, temperature=0, logprobs=True
    )
    assert with_logprobs.headers["x-ziggurat-cache"] == "bypass"
    assert with_logprobs.parse().choices[0].logprobs is not None
    assert upstream.total_streams == 2


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"top_k": -2}, "top_k"),
        ({"stop_token_ids": [-1]}, "stop_token_ids.0"),
        ({"stop_token_ids": "7"}, "stop_token_ids"),
        ({"logprobs": "maybe"}, "logprobs"),
    ],
)
async def test_bad_sampling_values_are_clear_400s(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    session = await sign_up(client, "bad@example.com")
    body = {"model": "remote", "messages": MESSAGES, **extra}
    response = await client.post("/v1/chat/completions", json=body, headers=session.headers)
    error = assert_error(response, 400, "invalid_request_error")
    if param == "top_logprobs" and "logprobs" not in extra:
        assert "top_logprobs requires logprobs" in str(error["message"])
    else:
        assert error["param"] == param, error
