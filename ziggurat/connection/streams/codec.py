"""Stream entries as flat string fields (what a Redis stream entry holds), kept short on purpose.

A delta is `{t: text, n: deltas}`; an end is `{f: finish_reason, p: prompt
tokens, c: completion tokens}` plus `x: error` when it failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from ziggurat.connection.streams.base import Appendable, Chunk, StreamEntry
from ziggurat.model.engine import FinishReason, GenerationEnd, TextDelta, Usage

_FINISH_REASONS = frozenset({"stop", "length", "cancelled", "error"})


def encode(item: Appendable) -> dict[str, str]:
    if isinstance(item, Chunk):
        return {"t": item.text, "n": str(item.tokens)}
    fields = {
        "f": item.finish_reason,
        "p": str(item.usage.prompt_tokens),
        "c": str(item.usage.completion_tokens),
    }
    if item.error is not None:
        fields["x"] = item.error
    return fields


def decode(entry_id: str, fields: Mapping[str, str]) -> StreamEntry:
    text = fields.get("t")
    if text is not None:
        return StreamEntry(entry_id, TextDelta(text), int(fields.get("n", "1")))
    reason = fields.get("f", "error")
    if reason not in _FINISH_REASONS:
        reason = "error"
    usage = Usage(int(fields.get("p", "0")), int(fields.get("c", "0")))
    return StreamEntry(entry_id, GenerationEnd(cast(FinishReason, reason), usage, fields.get("x")))
