import asyncio

from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, SamplingParams, TextDelta
from ziggurat.model.engines.demo import DemoEngine


def make_engine(inter_token_s: float = 0.0) -> DemoEngine:
    return DemoEngine(
        served_name="demo",
        capacity=4,
        time_to_first_token_s=0,
        inter_token_s=inter_token_s,
        default_max_tokens=512,
    )


def request(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        request_id="r1",
        model="demo",
        messages=(ChatMessage(role="user", content=text),),
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


async def run(engine: DemoEngine, req: GenerationRequest) -> tuple[str, GenerationEnd]:
    parts: list[str] = []
    end: GenerationEnd | None = None
    async for event in engine.generate(req):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            end = event
    assert end is not None
    return "".join(parts), end


async def test_reply_is_deterministic_markdown_about_the_prompt() -> None:
    engine = make_engine()
    first, end = await run(engine, request("How do I tune PostgreSQL autovacuum?"))
    second, _ = await run(engine, request("How do I tune PostgreSQL autovacuum?"))
    assert first == second
    assert "demo engine" in first
    assert "```python" in first and "| step |" in first
    assert "autovacuum" in first or "PostgreSQL" in first or "tune" in first
    assert end.finish_reason == "stop"
    assert end.usage.completion_tokens > 10
    assert end.usage.prompt_tokens > 0


async def test_max_tokens_truncates_with_length() -> None:
    text, end = await run(make_engine(), request("hello there", max_tokens=5))
    assert end.finish_reason == "length"
    assert end.usage.completion_tokens == 5
    assert len(text.split()) <= 5


async def test_stop_sequence_is_never_emitted() -> None:
    full, _ = await run(make_engine(), request("Explain caching layers"))
    stop = "## About"
    text, end = await run(make_engine(), request("Explain caching layers", stop=(stop,)))
    assert stop not in text
    assert full.startswith(text)
    assert end.finish_reason == "stop"


async def test_chinese_prompt_streams_complete_strings() -> None:
    text, _ = await run(make_engine(), request("请解释一下缓存的工作原理"))
    text.encode("utf-8")
    assert "请解释一下缓存的工作原理" in text


async def test_cancellation_is_counted() -> None:
    engine = make_engine(inter_token_s=0.05)
    events = engine.generate(request("slow answer please"))
    first = await anext(events)
    assert isinstance(first, TextDelta)
    task = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await events.aclose()
    assert engine.cancelled_count == 1
    assert engine.active_count == 0


async def test_counted_tokens_match_the_reported_prompt_usage() -> None:
    engine = make_engine()
    req = request("How many tokens is this prompt?")
    _, end = await run(engine, req)
    assert await engine.count_tokens(req.messages) == end.usage.prompt_tokens > 0
