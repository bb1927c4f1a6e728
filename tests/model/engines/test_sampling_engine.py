"""Sampling through the running transformers engine: stop token ids, logprobs, seeds in a crowd, usage.

The model is the tiny Llama of `tests/tiny_llama.py`, which greedily reproduces
its memorised replies, so the tests know every token the engine will pick.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tiny_llama import IM_END, MEMORISED
from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    TokenLogprob,
)
from ziggurat.model.engines.transformers import TransformersEngine

pytestmark = pytest.mark.model

STORY = "Tell me a story."


def _request(prompt: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"test-{prompt}",
        model="tiny",
        messages=(ChatMessage(role="user", content=prompt),),
        params=SamplingParams(**params),
    )


async def _run(
    engine: TransformersEngine, request: GenerationRequest
) -> tuple[list[TextDelta], GenerationEnd]:
    events = [event async for event in engine.generate(request)]
    *deltas, end = events
    assert isinstance(end, GenerationEnd)
    return [delta for delta in deltas if isinstance(delta, TextDelta)], end


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_path)


@pytest.fixture
async def engine(tiny_llama_path: Path) -> AsyncIterator[TransformersEngine]:
    engine = TransformersEngine(
        model_path=str(tiny_llama_path), served_name="tiny", max_batch_size=4, default_max_tokens=64
    )
    await engine.start()
    yield engine
    await engine.aclose()


def _reply_ids(tokenizer: Any, reply: str) -> list[int]:
    return list(tokenizer(reply + IM_END, add_special_tokens=False)["input_ids"])


async def test_a_stop_token_id_ends_the_answer_with_stop_and_counts_as_generated(
    engine: TransformersEngine, tokenizer: Any
) -> None:
    reply = _reply_ids(tokenizer, MEMORISED[STORY])
    stop_at = next(index for index in range(3, len(reply)) if reply[index] not in reply[:index])

    deltas, end = await _run(engine, _request(STORY, temperature=0, stop_token_ids=(reply[stop_at],)))

    assert end.finish_reason == "stop"
    assert "".join(delta.text for delta in deltas) == tokenizer.decode(reply[:stop_at])
    assert end.usage.completion_tokens == stop_at + 1


async def test_logprobs_come_one_per_shown_token_with_sorted_alternatives(
    engine: TransformersEngine, tokenizer: Any, tiny_llama_path: Path
) -> None:
    deltas, end = await _run(engine, _request(STORY, temperature=0, logprobs=True, top_logprobs=3))

    entries: list[TokenLogprob] = [entry for delta in deltas for entry in delta.logprobs or ()]
    text = "".join(delta.text for delta in deltas)
    assert text == MEMORISED[STORY]
    # Every generated token but the end-of-sequence one is shown, and has its entry.
    assert len(entries) == end.usage.completion_tokens - 1
    assert "".join(entry.token for entry in entries) == text
    for entry in entries:
        values = [value for _, value in entry.top]
        assert len(entry.top) == 3 and values == sorted(values, reverse=True)
        assert entry.logprob <= 0 and all(value <= 0 for value in values)
        assert entry.top[0][0] == entry.token and math.isclose(entry.top[0][1], entry.logprob)

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": STORY}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].float()
    first = _reply_ids(tokenizer, MEMORISED[STORY])[0]
    assert math.isclose(entries[0].logprob, float(torch.log_softmax(logits, -1)[first]), abs_tol=1e-4)


async def test_answers_without_logprobs_carry_none(engine: TransformersEngine) -> None:
    deltas, _ = await _run(engine, _request(STORY, temperature=0))

    assert deltas and all(delta.logprobs is None for delta in deltas)


async def test_a_seeded_sample_is_the_same_alone_and_in_a_crowd(engine: TransformersEngine) -> None:
    seeded = _request("hello there", temperature=1.3, top_p=0.95, top_k=50, seed=77, max_tokens=20)
    alone_deltas, alone_end = await _run(engine, seeded)

    crowd = [
        _request(prompt, temperature=1.0, seed=index, max_tokens=30)
        for index, prompt in enumerate(["你好", STORY, "something else"])
    ]
    results = await asyncio.gather(_run(engine, seeded), *(_run(engine, request) for request in crowd))

    crowded_deltas, crowded_end = results[0]
    assert "".join(d.text for d in crowded_deltas) == "".join(d.text for d in alone_deltas)
    assert crowded_end.usage == alone_end.usage
    assert engine.max_batch_observed > 1


async def test_penalties_change_a_greedy_answer(engine: TransformersEngine) -> None:
    plain, _ = await _run(engine, _request(STORY, temperature=0, max_tokens=30))
    penalised, _ = await _run(engine, _request(STORY, temperature=0, max_tokens=30, repetition_penalty=10.0))

    assert "".join(d.text for d in plain) == MEMORISED[STORY][: len("".join(d.text for d in plain))]
    assert "".join(d.text for d in penalised) != "".join(d.text for d in plain)


async def test_out_of_range_parameters_are_refused_before_anything_runs(engine: TransformersEngine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await _run(engine, _request(STORY, top_k=-2))

    assert caught.value.param == "top_k"
