"""The `x-ratelimit-*` headers OpenAI clients read, from the state of a request's buckets.

Like OpenAI's: `x-ratelimit-{limit,remaining,reset}-requests` for requests
per minute and `-tokens` for tokens, the reset as a duration until the limit
is whole again (`12ms`, `1s`, `6m0s`). Where several limits apply (the API
key's and the user's, a per-minute rate and a daily quota), each family
reports the one with the least left, since that is the one the client runs
into first. A family with no limit in force sends no headers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ziggurat.service.limits.policy import TOKEN_KINDS, BucketState


def rate_limit_headers(states: Iterable[BucketState]) -> dict[str, str]:
    requests: list[BucketState] = []
    tokens: list[BucketState] = []
    for state in states:
        if state.bucket.kind == "requests_per_minute":
            requests.append(state)
        elif state.bucket.kind in TOKEN_KINDS:
            tokens.append(state)
    headers: dict[str, str] = {}
    for family, candidates in (("requests", requests), ("tokens", tokens)):
        if not candidates:
            continue
        tightest = min(candidates, key=lambda state: (state.remaining, -state.reset_s))
        headers[f"x-ratelimit-limit-{family}"] = str(tightest.bucket.limit)
        headers[f"x-ratelimit-remaining-{family}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{family}"] = format_duration(tightest.reset_s)
    return headers


def retry_after_ms(retry_after_s: float) -> dict[str, str]:
    """`retry-after-ms`, which the openai SDKs prefer to `Retry-After` (whole seconds, sent beside it)."""
    return {"retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000)))}


def format_duration(seconds: float) -> str:
    """`850ms`, `1s`, `1.5s`, `6m0s`, `2h3m4s`: the duration format of OpenAI's reset headers."""
    milliseconds = max(0, math.ceil(seconds * 1000))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
