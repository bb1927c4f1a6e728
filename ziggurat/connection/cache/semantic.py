"""Semantic response matching: find a stored answer whose prompt says the same thing in other words.

Only the wording of the last user message is compared by meaning. Everything
else that shapes the answer (model, scope, system prompt, earlier turns,
sampling parameters) goes into a context digest that must be equal, so a
different system prompt or history never matches however similar the question.
The index maps vectors to exact response-cache keys; the answer itself is
always read from that key, so a vector whose answer has expired is a miss (and
is discarded), never a stale answer.

Where the vectors live:

- `MemoryVectorIndex`: bounded `VectorSets` in this process. Vectors carry no
  expiry: a vector is dropped when its answer turns out to be gone, or by the
  bounds.
- `RedisVectorIndex`: one hash per namespace (`{prefix}:sem:{model}:{scope}`,
  field = the answer's key, value = context digest + float32 vector), shared by
  every replica. A search needs every vector of its namespace, and fetching up
  to `max_entries` × 1.5 KiB from Redis on every lookup would cost more than
  the lookup could save, so each gateway keeps a copy of a namespace for
  `refresh_s` seconds (bounded in total vectors, least recently used dropped).
  A copy a few seconds old only means an answer another replica stored just now
  is found a little later: a miss, never a wrong answer. Redis bounds each hash
  by evicting at random (`semantic_add.lua`: hashes keep no insertion order, and
  an ordered companion structure would double every write for a cache); the
  hash expires with the newest answer in it.

Like the rest of the cache, an unreachable Redis makes this a no-op (see
`outage.py`).

Meaning is not identity: all-MiniLM-L6-v2 scores "Is it safe to take ibuprofen
with alcohol?" against "... without alcohol?" at 0.956, as high as a true
paraphrase ("What is the capital of France?" / "what's the capital city of
France?": 0.957), and "What is 17 * 23?" / "What is 17 * 24?" at 0.91. No
threshold separates those, which is why semantic matching is off by default
and meant for operators whose traffic is FAQ-like. Each cacheable miss also
pays one embedding (about 20 ms of CPU on a small machine).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from functools import cache
from importlib import resources
from typing import Protocol

import numpy as np
import redis.asyncio as redis

from ziggurat.connection.cache.embeddings import Embedder
from ziggurat.connection.cache.kv import require_binary_replies
from ziggurat.connection.cache.outage import BACKEND_ERRORS, OutageLog
from ziggurat.connection.cache.vectors import CONTEXT_BYTES, Neighbour, Vector, VectorSet, VectorSets

__all__ = ["MemoryVectorIndex", "Neighbour", "RedisVectorIndex", "SemanticMatcher", "VectorIndex"]


class VectorIndex(Protocol):
    """Unit vectors by namespace, each under an answer's key and a context digest."""

    async def nearest(self, namespace: str, context: bytes, vector: Vector) -> Neighbour | None:
        """The most similar vector stored with this exact context, however similar; None if there is none."""
        ...

    async def add(
        self, namespace: str, key: str, context: bytes, vector: Vector, *, ttl_s: float
    ) -> None: ...

    async def discard(self, namespace: str, key: str) -> None: ...


class MemoryVectorIndex:
    """In-process: at most `max_entries` vectors per namespace and `max_total_entries` in all."""

    def __init__(self, *, max_entries: int, max_total_entries: int) -> None:
        self._sets = VectorSets(max_entries=max_entries, max_total_entries=max_total_entries)

    async def nearest(self, namespace: str, context: bytes, vector: Vector) -> Neighbour | None:
        vectors = self._sets.get(namespace)
        return vectors.nearest(context, vector) if vectors is not None else None

    async def add(self, namespace: str, key: str, context: bytes, vector: Vector, *, ttl_s: float) -> None:
        self._sets.add(namespace, key, context, vector)

    async def discard(self, namespace: str, key: str) -> None:
        self._sets.discard(namespace, key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _binary(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _is_row_size(size: int) -> bool:
    """A context digest followed by at least one float32."""
    return size > CONTEXT_BYTES and (size - CONTEXT_BYTES) % 4 == 0


@cache
def _script(name: str) -> str:
    return resources.files("ziggurat.connection.cache").joinpath(f"{name}.lua").read_text()


class RedisVectorIndex:
    """A hash per namespace in Redis, searched in a local copy at most `refresh_s` old.

    While one task reloads a namespace, others search the copy they have (or miss when there is
    none yet), so a popular namespace is fetched once per `refresh_s`, not once per request.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        max_entries: int,
        max_cached_entries: int = 20_000,
        refresh_s: float = 5.0,
        timeout_s: float = 1.0,
    ) -> None:
        require_binary_replies(client)
        self._client = client
        self._prefix = f"{prefix}:"
        self._max_entries = max_entries
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._copies = VectorSets(max_entries=max_entries, max_total_entries=max_cached_entries)
        self._loaded_at: dict[str, float] = {}
        self._reloading: set[str] = set()
        self._add = client.register_script(_script("semantic_add"))
        self._outage = OutageLog("semantic")

    async def nearest(self, namespace: str, context: bytes, vector: Vector) -> Neighbour | None:
        vectors = await self._copy(namespace)
        return vectors.nearest(context, vector) if vectors is not None else None

    async def _copy(self, namespace: str) -> VectorSet | None:
        vectors = self._copies.get(namespace)
        if vectors is None:
            self._loaded_at.pop(namespace, None)  # the copy was dropped by the bound
        is_fresh = time.monotonic() - self._loaded_at.get(namespace, float("-inf")) < self._refresh_s
        if (vectors is not None and is_fresh) or namespace in self._reloading:
            return vectors
        self._reloading.add(namespace)
        try:
            loaded = await self._load(namespace)
        finally:
            self._reloading.discard(namespace)
        if loaded is None:
            return vectors
        self._copies.replace(namespace, loaded)
        self._loaded_at[namespace] = time.monotonic()
        if len(self._loaded_at) > 2 * len(self._copies) + 16:
            self._forget_dropped()
        return loaded

    def _forget_dropped(self) -> None:
        for namespace in [name for name in self._loaded_at if name not in self._copies]:
            del self._loaded_at[namespace]

    async def _load(self, namespace: str) -> VectorSet | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                fields = await self._client.hgetall(self._prefix + namespace)
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="load_vectors")
            return None
        self._outage.succeeded()
        entries = {_text(field): _binary(value) for field, value in fields.items()}
        sizes = [len(value) for value in entries.values() if _is_row_size(len(value))]
        row_size = max(set(sizes), key=sizes.count) if sizes else CONTEXT_BYTES
        # A row of another size was written by an embedder of another dimension: skip it.
        keys = [key for key, value in entries.items() if len(value) == row_size]
        rows = np.frombuffer(b"".join(entries[key] for key in keys), dtype=np.uint8).reshape(
            len(keys), row_size
        )
        return VectorSet.of(
            keys, rows, max_entries=self._copies.max_entries, dimensions=(row_size - CONTEXT_BYTES) // 4
        )

    async def add(self, namespace: str, key: str, context: bytes, vector: Vector, *, ttl_s: float) -> None:
        value = context + np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._add(keys=[self._prefix + namespace], args=[key, value, ttl_ms, self._max_entries])
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="add_vector")
            return
        self._outage.succeeded()
        if namespace in self._copies:
            self._copies.add(namespace, key, context, vector)

    async def discard(self, namespace: str, key: str) -> None:
        self._copies.discard(namespace, key)
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.hdel(self._prefix + namespace, key)
        except BACKEND_ERRORS as error:
            self._outage.failed(error, operation="discard_vector")
            return
        self._outage.succeeded()


class SemanticMatcher:
    """Embeds the wording of a prompt and finds a stored one at cosine similarity `threshold` or above.

    The last `memo_size` embeddings are kept by text, so storing an answer after a missed lookup
    for the same prompt does not embed it twice.
    """

    def __init__(
        self, embedder: Embedder, index: VectorIndex, *, threshold: float, memo_size: int = 256
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self._embedder = embedder
        self._index = index
        self._threshold = threshold
        self._memo_size = memo_size
        self._memo: OrderedDict[str, Vector] = OrderedDict()

    @property
    def threshold(self) -> float:
        return self._threshold

    async def start(self) -> None:
        await self._embedder.start()

    async def nearest(self, namespace: str, context: bytes, text: str) -> Neighbour | None:
        neighbour = await self._index.nearest(namespace, context, await self._embed(text))
        if neighbour is None or neighbour.similarity < self._threshold:
            return None
        return neighbour

    async def remember(self, namespace: str, context: bytes, text: str, key: str, *, ttl_s: float) -> None:
        await self._index.add(namespace, key, context, await self._embed(text), ttl_s=ttl_s)

    async def forget(self, namespace: str, key: str) -> None:
        await self._index.discard(namespace, key)

    async def _embed(self, text: str) -> Vector:
        vector = self._memo.get(text)
        if vector is not None:
            self._memo.move_to_end(text)
            return vector
        vector = np.asarray((await self._embedder.embed([text]))[0], dtype=np.float32)
        self._memo[text] = vector
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return vector
