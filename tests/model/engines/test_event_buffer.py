"""The transformers engine's per-request buffer merges deltas while its reader is behind."""

from __future__ import annotations

from ziggurat.model.engine import GenerationEnd, TextDelta, Usage
from ziggurat.model.engines.transformers import _EventBuffer


async def test_merged_deltas_keep_their_token_count() -> None:
    buffer = _EventBuffer()
    buffer.put(TextDelta("Hel"))
    buffer.put(TextDelta("lo"))
    buffer.put(TextDelta(" there", tokens=2))
    buffer.put(GenerationEnd("stop", Usage(3, 4)))

    merged = await buffer.get()
    assert merged == TextDelta("Hello there", None, 4)
    assert isinstance(await buffer.get(), GenerationEnd)
