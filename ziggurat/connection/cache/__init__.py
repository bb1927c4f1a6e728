"""Caches in front of the model and the database: in memory by default, in Redis across replicas.

- `response.ResponseCache`: whole answers to deterministic requests (exact match,
  optionally semantic match through `semantic.SemanticMatcher`, with
  `embeddings.MiniLMEmbedder` and a `MemoryVectorIndex` or `RedisVectorIndex`).
- `session.SessionCache`: the recent message rows of active conversations,
  written through by the chat service; the database stays the source of truth.
- `kv.KeyValueStore`: the byte store both sit on (`MemoryKeyValueStore`,
  `RedisKeyValueStore`).

A cache never fails a request: with Redis unreachable every lookup is a miss and
every write is skipped (`outage.py`). Nothing here knows users, HTTP or settings
objects; the composition root picks the implementations and passes plain values.
The semantic modules need the `semantic` extra (numpy, torch, transformers and
the packaged model) and are imported only when semantic matching is enabled.
"""
