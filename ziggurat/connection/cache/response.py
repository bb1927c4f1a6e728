"""The response cache: whole answers to deterministic requests, served again without a model.

Only a request that would get the same answer again is cached: greedy decoding
(`temperature == 0`) or a fixed `seed`, and never the continuation of an
answer that a worker had started. Answers are kept per model and per *scope*,
a string the caller chooses (the user id, or "shared" when the operator lets
users share answers), so one user's answer never reaches another unless
allowed. The key is a SHA-256 of the normalised request: model, scope, every
message (content trimmed of surrounding whitespace) and every sampling
parameter, stop strings in their order. Only complete answers ("stop" or
"length") are stored, never errors or cancelled ones.

Optionally a `SemanticMatcher` also finds an answer to a question worded
differently (see `semantic.py`). The usage of an answer found that way is the
usage of the request that produced it.

Backend failures are misses and skipped writes (see `outage.py`); this module
decides what is cached, the `KeyValueStore` where. It does not stream: the
caller replays the text as it likes, and it keeps the counters for metrics.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import orjson

from ziggurat.connection.cache.kv import KeyValueStore
from ziggurat.model.engine import ChatMessage, FinishReason, GenerationEnd, GenerationRequest, Usage

if TYPE_CHECKING:
    from ziggurat.connection.cache.semantic import SemanticMatcher

CacheMatch = Literal["exact", "semantic"]
StoredFinishReason = Literal["stop", "length"]
_STORED_FINISH_REASONS: frozenset[str] = frozenset(get_args(StoredFinishReason))
_FORMAT_VERSION = 1
_CONTEXT_BYTES = 16
"""The length of a context digest (`vectors.CONTEXT_BYTES`, not imported: that module needs numpy)."""


@dataclass(slots=True, frozen=True)
class CachedAnswer:
    """A stored answer; `similarity` is 1.0 for an exact match, the cosine similarity for a semantic one."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    match: CacheMatch
    similarity: float


def is_cacheable(request: GenerationRequest) -> bool:
    """Whether the request is deterministic enough for its answer to be served again."""
    if request.continuation or request.params.logprobs:
        return False  # a stored answer has no logprobs to give back
    return request.params.temperature == 0 or request.params.seed is not None


def _float(value: float | None) -> float | None:
    return float(value) if value is not None else None


def _messages(messages: tuple[ChatMessage, ...]) -> list[list[str]]:
    return [[message.role, message.content.strip()] for message in messages]


def _normalised(request: GenerationRequest, scope: str, messages: tuple[ChatMessage, ...]) -> bytes:
    params = request.params
    key: dict[str, object] = {
        "model": request.model,
        "scope": scope,
        "messages": _messages(messages),
        "max_tokens": params.max_tokens,
        "temperature": _float(params.temperature),
        "top_p": _float(params.top_p),
        "stop": list(params.stop),
        "seed": params.seed,
    }
    # Later sampling controls join the key only when set, so existing entries keep their keys.
    extra = {
        "top_k": params.top_k or None,
        "repetition_penalty": _float(params.repetition_penalty),
        "frequency_penalty": _float(params.frequency_penalty),
        "presence_penalty": _float(params.presence_penalty),
        "stop_token_ids": list(params.stop_token_ids) or None,
    }
    key.update((name, value) for name, value in extra.items() if value is not None)
    return orjson.dumps(key, option=orjson.OPT_SORT_KEYS)


def _encode(text: str, end: GenerationEnd) -> bytes:
    return orjson.dumps(
        {
            "v": _FORMAT_VERSION,
            "text": text,
            "finish_reason": end.finish_reason,
            "prompt_tokens": end.usage.prompt_tokens,
            "completion_tokens": end.usage.completion_tokens,
        }
    )


def _decode(raw: bytes, *, match: CacheMatch, similarity: float) -> CachedAnswer | None:
    """The stored answer, or None for an entry this version cannot read (treated as a miss)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != _FORMAT_VERSION:
        return None
    text, finish_reason = data.get("text"), data.get("finish_reason")
    prompt_tokens, completion_tokens = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(text, str) or finish_reason not in _STORED_FINISH_REASONS:
        return None
    if not (isinstance(prompt_tokens, int) and isinstance(completion_tokens, int)):
        return None
    return CachedAnswer(
        text=text,
        finish_reason="stop" if finish_reason == "stop" else "length",
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        match=match,
        similarity=similarity,
    )


class ResponseCache:
    """Exact (and optionally semantic) matches of deterministic requests, per model and scope.

    `hits` counts every answer served (`semantic_hits` those found by meaning); `misses` counts
    cacheable lookups that found nothing. Lookups of requests that are not cacheable count as neither.
    """

    is_cacheable = staticmethod(is_cacheable)

    def __init__(
        self, store: KeyValueStore, *, ttl_s: float, semantic: SemanticMatcher | None = None
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._semantic = semantic
        self.hits = 0
        self.misses = 0
        self.semantic_hits = 0

    @property
    def is_semantic(self) -> bool:
        return self._semantic is not None

    async def start(self) -> None:
        """Load the embedding model now (in a thread) rather than during the first lookup."""
        if self._semantic is not None:
            await self._semantic.start()

    def key(self, request: GenerationRequest, *, scope: str) -> str:
        digest = hashlib.sha256(_normalised(request, scope, request.messages)).hexdigest()
        return f"resp:{request.model}:{scope}:{digest}"

    async def lookup(self, request: GenerationRequest, *, scope: str) -> CachedAnswer | None:
        if not is_cacheable(request):
            return None
        raw = await self._store.get(self.key(request, scope=scope))
        answer = _decode(raw, match="exact", similarity=1.0) if raw is not None else None
        if answer is None and self._semantic is not None:
            answer = await self._lookup_semantic(self._semantic, request, scope)
        if answer is None:
            self.misses += 1
            return None
        self.hits += 1
        if answer.match == "semantic":
            self.semantic_hits += 1
        return answer

    async def _lookup_semantic(
        self, semantic: SemanticMatcher, request: GenerationRequest, scope: str
    ) -> CachedAnswer | None:
        wording = _last_user_wording(request)
        if wording is None:
            return None
        namespace = _namespace(request, scope)
        neighbour = await semantic.nearest(namespace, _context(request, scope), wording)
        if neighbour is None:
            return None
        raw = await self._store.get(neighbour.key)
        answer = _decode(raw, match="semantic", similarity=neighbour.similarity) if raw is not None else None
        if answer is None:
            await semantic.forget(namespace, neighbour.key)
        return answer

    async def store(self, request: GenerationRequest, *, scope: str, text: str, end: GenerationEnd) -> None:
        """Keep a finished answer; anything but a complete answer to a cacheable request is ignored."""
        if not is_cacheable(request) or end.finish_reason not in _STORED_FINISH_REASONS or end.error:
            return
        key = self.key(request, scope=scope)
        is_stored = await self._store.set(key, _encode(text, end), self._ttl_s)
        wording = _last_user_wording(request)
        if is_stored and self._semantic is not None and wording is not None:
            await self._semantic.remember(
                _namespace(request, scope), _context(request, scope), wording, key, ttl_s=self._ttl_s
            )


def _last_user_wording(request: GenerationRequest) -> str | None:
    """What semantic matching compares: the last message, when it is the user's and not empty."""
    if not request.messages or request.messages[-1].role != "user":
        return None
    return request.messages[-1].content.strip() or None


def _namespace(request: GenerationRequest, scope: str) -> str:
    return f"sem:{request.model}:{scope}"


def _context(request: GenerationRequest, scope: str) -> bytes:
    """Everything but the last message's wording, which semantic matching requires to be equal."""
    return hashlib.sha256(_normalised(request, scope, request.messages[:-1])).digest()[:_CONTEXT_BYTES]
