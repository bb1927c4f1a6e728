"""Stream entries as flat string fields (what a Redis stream entry holds), kept short on purpose.

A delta is `{t: text, n: deltas}`, plus `l: logprobs` (JSON `[[token,
logprob, [[alternative, logprob], ...]], ...]`) when the request asked for
them; an end is `{f: finish_reason, p: prompt tokens, c: completion tokens}`
plus `x: error` when it failed. Readers take the two-field delta, by far the
most common entry, without looking for the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

from ziggurat.connection.streams.base import Appendable, Chunk, StreamEntry
from ziggurat.model.engine import FinishReason, GenerationEnd, TextDelta, TokenLogprob, Usage

_FINISH_REASONS = frozenset({"stop", "length", "cancelled", "error"})


def encode(item: Appendable) -> dict[str, str]:
    if isinstance(item, Chunk):
        if item.logprobs is None:
            return {"t": item.text, "n": str(item.tokens)}
        return {"t": item.text, "n": str(item.tokens), "l": encode_logprobs(item.logprobs)}
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
        raw = fields.get("l")
        logprobs = decode_logprobs(raw) if raw is not None else None
        return StreamEntry(entry_id, TextDelta(text, logprobs), int(fields.get("n", "1")))
    reason = fields.get("f", "error")
    if reason not in _FINISH_REASONS:
        reason = "error"
    usage = Usage(int(fields.get("p", "0")), int(fields.get("c", "0")))
    return StreamEntry(entry_id, GenerationEnd(cast(FinishReason, reason), usage, fields.get("x")))


def encode_logprobs(logprobs: tuple[TokenLogprob, ...]) -> str:
    return orjson.dumps([[lp.token, lp.logprob, lp.top] for lp in logprobs]).decode()


def decode_logprobs(raw: str) -> tuple[TokenLogprob, ...] | None:
    """The logprobs of a delta entry; None for a value this version cannot read (the text still counts)."""
    try:
        items: Any = orjson.loads(raw)
        return tuple(
            TokenLogprob(str(token), float(logprob), tuple((str(t), float(p)) for t, p in top))
            for token, logprob, top in items
        )
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
