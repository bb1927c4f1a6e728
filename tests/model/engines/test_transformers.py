"""The embedded transformers engine against a real (tiny) Llama loaded through `from_pretrained`.

The model comes from `tests/tiny_llama.py`: built offline, trained just enough
that greedy decoding reproduces `MEMORISED` replies (Chinese, emoji, English),
so the assertions are about real multi-byte output. A `StepGate` makes each
forward pass of the model wait for the test's permission, so batching and
cancellation are checked at exact decode steps instead of by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from tests.tiny_llama import IM_END, MEMORISED
from ziggurat.errors import InvalidRequest, UpstreamFailed
from ziggurat.model.engine import (
    ChatMessage,
    EngineStats,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from ziggurat.model.engines.transformers import TransformersEngine
from ziggurat.model.engines.transformers_runner import LlamaRunner
from ziggurat.model.engines.transformers_text import REPLACEMENT_CHAR

pytestmark = pytest.mark.model

STORY = "Tell me a story."
GREETING = "你好"


class StepGate:
    """Every forward pass of the model waits here until the test allows it (or opens the gate)."""

    def __init__(self) -> None:
        self._permits = threading.Semaphore(0)
        self._is_open = threading.Event()
        self._is_open.set()
        self.is_blocking = threading.Event()

    def close(self) -> None:
        self._is_open.clear()

    def open(self) -> None:
        self._is_open.set()

    def allow(self, steps: int = 1) -> None:
        for _ in range(steps):
            self._permits.release()

    def wait(self) -> None:
        while not self._is_open.is_set():
            self.is_blocking.set()
            if self._permits.acquire(timeout=0.01):
                break
        self.is_blocking.clear()


def _gated(gate: StepGate, method: Callable[..., Any]) -> Callable[..., Any]:
    def gated(self: Any, *args: Any, **kwargs: Any) -> Any:
        gate.wait()
        return method(self, *args, **kwargs)

    return gated


def _request(prompt: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="test",
        model="tiny",
        messages=(ChatMessage(role="user", content=prompt),),
        params=SamplingParams(**params),
    )


async def _events(engine: TransformersEngine, request: GenerationRequest) -> list[GenerationEvent]:
    return [event async for event in engine.generate(request)]


async def _run(engine: TransformersEngine, prompt: str, **params: Any) -> tuple[list[str], GenerationEnd]:
    events = await _events(engine, _request(prompt, **params))
    *deltas, end = events
    assert isinstance(end, GenerationEnd)
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    return [delta.text for delta in deltas if isinstance(delta, TextDelta)], end


async def _eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    # The counters are written by the decode thread, which has no event to await: poll them.
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _reply_ids(tokenizer: Any, reply: str) -> list[int]:
    return list(tokenizer(reply + IM_END, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="session")
def tokenizer(tiny_llama_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_path)


@pytest.fixture(params=["auto", "hf"])
async def engine(tiny_llama_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[TransformersEngine]:
    # Every test runs on both forward paths: the lean runner (auto picks it for a Llama) and HF's.
    engine = TransformersEngine(
        model_path=str(tiny_llama_path),
        served_name="tiny",
        max_batch_size=4,
        default_max_tokens=64,
        runner=request.param,
    )
    await engine.start()
    yield engine
    await engine.aclose()


@pytest.fixture
def gate(engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Depends on `engine` so the gate opens before the engine's teardown joins the decode thread.
    gate = StepGate()
    for owner, name in ((LlamaForCausalLM, "forward"), (LlamaRunner, "prefill"), (LlamaRunner, "decode")):
        monkeypatch.setattr(owner, name, _gated(gate, getattr(owner, name)))
    yield gate
    gate.open()


async def test_streams_deltas_then_exactly_one_end_with_usage(
    engine: TransformersEngine, tokenizer: Any
) -> None:
    events = await _events(engine, _request(STORY, temperature=0))

    assert [isinstance(event, GenerationEnd) for event in events].count(True) == 1
    assert isinstance(events[-1], GenerationEnd)
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == MEMORISED[STORY]
    assert events[-1].finish_reason == "stop"
    assert events[-1].usage.prompt_tokens == len(_prompt_ids(tokenizer, STORY))
    # The EOS token was generated, so it counts, but it is never shown.
    assert events[-1].usage.completion_tokens == len(_reply_ids(tokenizer, MEMORISED[STORY]))


async def test_chinese_and_emoji_answer_streams_only_whole_characters(
    engine: TransformersEngine, tokenizer: Any
) -> None:
    reply_ids = _reply_ids(tokenizer, MEMORISED[GREETING])
    is_split = [REPLACEMENT_CHAR in tokenizer.decode([token_id]) for token_id in reply_ids]
    assert any(is_split), "precondition: the reply has characters spread over several tokens"

    chunks, end = await _run(engine, GREETING, temperature=0)

    assert end.finish_reason == "stop"
    assert "".join(chunks) == MEMORISED[GREETING]
    for chunk in chunks:
        assert REPLACEMENT_CHAR not in chunk
        chunk.encode("utf-8")


async def test_counted_tokens_are_the_prompt_the_model_is_fed(tiny_llama_path: Path, tokenizer: Any) -> None:
    engine = TransformersEngine(
        model_path=str(tiny_llama_path), served_name="tiny", max_batch_size=1, default_max_tokens=8
    )
    request = _request(STORY)
    assert await engine.count_tokens(request.messages) is None  # not loaded yet
    await engine.start()
    try:
        events = await _events(engine, request)
        counted = await engine.count_tokens(request.messages)
    finally:
        await engine.aclose()
    assert isinstance(events[-1], GenerationEnd)
    assert counted == events[-1].usage.prompt_tokens == len(_prompt_ids(tokenizer, STORY))


async def test_greedy_decoding_is_deterministic(engine: TransformersEngine) -> None:
    first = await _run(engine, "hello there", temperature=0)
    second = await _run(engine, "hello there", temperature=0)

    assert "".join(first[0]) == "".join(second[0])
    assert first[1] == second[1]


async def test_same_seed_gives_same_sample_and_the_seed_matters(engine: TransformersEngine) -> None:
    texts = []
    for seed in range(4):
        once, _ = await _run(engine, "hello there", temperature=1.5, seed=seed)
        again, _ = await _run(engine, "hello there", temperature=1.5, seed=seed)
        assert "".join(once) == "".join(again)
        texts.append("".join(once))

    assert len(set(texts)) > 1


async def test_top_p_sampling_with_seed_is_reproducible(engine: TransformersEngine) -> None:
    once, once_end = await _run(engine, "hello there", temperature=1.0, top_p=0.5, seed=7)
    again, again_end = await _run(engine, "hello there", temperature=1.0, top_p=0.5, seed=7)

    assert "".join(once) == "".join(again)
    assert once_end == again_end


@pytest.mark.parametrize(
    ("prompt", "stop", "expected"),
    [
        (STORY, ("tiny",), "Once upon a time, there was a "),
        (STORY, ("count", "upon"), "Once "),
        (GREETING, ("模型",), "你好！我是一个小"),
        (GREETING, ("👍 再",), "你好！我是一个小模型。😀"),
    ],
)
async def test_stop_strings_end_the_answer_and_are_never_shown(
    engine: TransformersEngine, tokenizer: Any, prompt: str, stop: tuple[str, ...], expected: str
) -> None:
    chunks, end = await _run(engine, prompt, temperature=0, stop=stop)

    assert "".join(chunks) == expected
    assert end.finish_reason == "stop"
    assert end.usage.completion_tokens < len(_reply_ids(tokenizer, MEMORISED[prompt]))


async def test_max_tokens_ends_with_length(engine: TransformersEngine, tokenizer: Any) -> None:
    chunks, end = await _run(engine, STORY, temperature=0, max_tokens=5)

    assert end.finish_reason == "length"
    assert end.usage.completion_tokens == 5
    assert "".join(chunks) == tokenizer.decode(_reply_ids(tokenizer, MEMORISED[STORY])[:5])


async def test_max_tokens_is_clipped_to_the_context(engine: TransformersEngine) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. " * 4

    _, end = await _run(engine, prompt, temperature=1.5, seed=1, max_tokens=10_000)

    assert end.usage.total_tokens <= 256
    if end.finish_reason == "length":
        assert end.usage.total_tokens == 256


async def test_prompt_longer_than_the_context_is_refused(engine: TransformersEngine) -> None:
    with pytest.raises(InvalidRequest, match="context") as caught:
        await _events(engine, _request("The lazy dog sleeps. " * 60))

    assert caught.value.param == "messages"


@pytest.mark.parametrize(
    ("params", "param"),
    [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p")],
)
async def test_invalid_sampling_params_are_refused(
    engine: TransformersEngine, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await _events(engine, _request(STORY, **params))

    assert caught.value.param == param


async def test_concurrent_requests_share_a_batch_and_match_running_alone(
    engine: TransformersEngine, gate: StepGate
) -> None:
    prompts = [STORY, GREETING, "hello there", "随便说点什么"]
    alone = [await _run(engine, prompt, temperature=0, max_tokens=30) for prompt in prompts]

    gate.close()
    async with asyncio.TaskGroup() as group:
        first = group.create_task(_run(engine, prompts[0], temperature=0, max_tokens=30))
        await _eventually(gate.is_blocking.is_set)
        others = [
            group.create_task(_run(engine, prompt, temperature=0, max_tokens=30)) for prompt in prompts[1:]
        ]
        await _eventually(lambda: engine.waiting_count == 3)
        gate.open()
    together = [first.result(), *(task.result() for task in others)]

    assert engine.max_batch_observed == 4
    for (alone_chunks, alone_end), (batch_chunks, batch_end) in zip(alone, together, strict=True):
        assert "".join(batch_chunks) == "".join(alone_chunks)
        assert batch_end == alone_end


async def test_closing_the_stream_frees_the_slot_within_one_step(
    engine: TransformersEngine, gate: StepGate
) -> None:
    gate.close()
    stream = engine.generate(_request(STORY, temperature=0))
    gate.allow(1)  # the prefill
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await _eventually(lambda: engine.active_count == 1)  # the first token is sent just before joining

    await stream.aclose()  # type: ignore[attr-defined]
    gate.allow(1)  # the step already under way; the next round drops the sequence

    await _eventually(lambda: engine.active_count == 0)
    assert engine.cancelled_count == 1
    gate.open()
    chunks, end = await _run(engine, STORY, temperature=0)
    assert "".join(chunks) == MEMORISED[STORY]
    assert end.finish_reason == "stop"


async def test_cancelling_a_waiting_request_never_runs_it(engine: TransformersEngine, gate: StepGate) -> None:
    gate.close()
    async with asyncio.TaskGroup() as group:
        running = group.create_task(_run(engine, STORY, temperature=0, max_tokens=5))
        await _eventually(gate.is_blocking.is_set)
        waiting = group.create_task(_run(engine, GREETING, temperature=0))
        await _eventually(lambda: engine.waiting_count == 1)
        waiting.cancel()
        gate.open()

    assert waiting.cancelled()
    assert running.result()[1].finish_reason == "length"
    await _eventually(lambda: engine.waiting_count == 0 and engine.active_count == 0)
    assert engine.max_batch_observed == 1
    assert engine.cancelled_count == 1


async def test_aclose_ends_open_streams_as_cancelled(engine: TransformersEngine, gate: StepGate) -> None:
    gate.close()
    async with asyncio.TaskGroup() as group:
        answer = group.create_task(_run(engine, STORY, temperature=0))
        await _eventually(gate.is_blocking.is_set)
        closing = group.create_task(engine.aclose())
        await asyncio.sleep(0)
        gate.open()
        await closing

    assert answer.result()[1].finish_reason == "cancelled"
    assert not engine.is_ready
    with pytest.raises(UpstreamFailed):
        await _events(engine, _request(STORY))


async def test_stats_report_the_running_batch_and_its_kv_cache(
    engine: TransformersEngine, gate: StepGate
) -> None:
    assert engine.stats() == EngineStats(running=0, waiting=0, batch_size=0, kv_cache_usage=0.0)
    gate.close()
    async with asyncio.TaskGroup() as group:
        first = group.create_task(_run(engine, STORY, temperature=0, max_tokens=8))
        await _eventually(gate.is_blocking.is_set)  # the first prefill
        second = group.create_task(_run(engine, GREETING, temperature=0, max_tokens=8))
        await _eventually(lambda: engine.stats().waiting == 1)
        assert engine.stats().running == 0
        gate.allow(
            3
        )  # the first prefill and step (alone until it shows its cache layout), the second prefill
        await _eventually(lambda: engine.stats().batch_size == 2)
        stats = engine.stats()
        assert stats.running == 2 and stats.waiting == 0
        assert stats.kv_cache_usage is not None and 0 < stats.kv_cache_usage <= 1
        gate.open()
    assert first.result()[1].usage.completion_tokens and second.result()[1].usage.completion_tokens
    await _eventually(lambda: engine.stats().running == 0)
    assert engine.stats() == EngineStats(running=0, waiting=0, batch_size=0, kv_cache_usage=0.0)
