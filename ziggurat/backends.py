"""The shared backends a deployment uses, built from settings (part of the composition root).

In-process by default; RabbitMQ and Redis when their URLs are set. Each returns
the protocol type the layers above depend on, so nothing else knows which one runs.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from ziggurat.config import Settings
from ziggurat.connection.broker.base import JobQueue
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.broker.memory import MemoryJobQueue
from ziggurat.connection.cache.kv import KeyValueStore, MemoryKeyValueStore, RedisKeyValueStore
from ziggurat.connection.cache.response import ResponseCache
from ziggurat.connection.cache.session import SessionCache
from ziggurat.connection.streams.base import EventStreams
from ziggurat.connection.streams.memory import MemoryStreams
from ziggurat.service.limits.base import RateLimiter
from ziggurat.service.limits.gate import RateLimitGate
from ziggurat.service.limits.memory import MemoryRateLimiter
from ziggurat.service.metrics import Metrics

if TYPE_CHECKING:
    from ziggurat.connection.cache.semantic import VectorIndex


async def open_broker(settings: Settings, redis_client: Redis | None, stack: AsyncExitStack) -> Broker:
    """The job queue and the event streams this deployment uses (in-process unless URLs are set)."""
    broker_settings = settings.broker
    jobs: JobQueue
    if settings.broker_url is not None:
        from ziggurat.connection.broker.rabbitmq import RabbitJobQueue

        rabbit = RabbitJobQueue(
            settings.broker_url.get_secret_value(),
            prefix=broker_settings.queue_prefix,
            max_queue_depth=broker_settings.max_queue_depth,
            job_ttl_s=broker_settings.job_ttl_s,
            heartbeat_s=broker_settings.heartbeat_s,
        )
        await rabbit.connect()
        jobs = rabbit
    else:
        jobs = MemoryJobQueue(max_queue_depth=broker_settings.max_queue_depth)
    streams: EventStreams
    if redis_client is not None:
        from ziggurat.connection.streams.redis import RedisStreams

        streams = RedisStreams(
            redis_client,
            prefix=broker_settings.redis_prefix,
            max_entries=broker_settings.stream_max_entries,
            ttl_s=broker_settings.stream_ttl_s,
            first_event_timeout_s=broker_settings.first_event_timeout_s,
            idle_timeout_s=broker_settings.stream_idle_timeout_s,
        )
    else:
        streams = MemoryStreams(
            max_entries=broker_settings.stream_max_entries,
            ttl_s=broker_settings.stream_ttl_s,
            first_event_timeout_s=broker_settings.first_event_timeout_s,
            idle_timeout_s=broker_settings.stream_idle_timeout_s,
        )
    broker = Broker(jobs=jobs, streams=streams)
    stack.push_async_callback(broker.aclose)
    return broker


async def open_caches(
    settings: Settings, redis_client: Redis | None
) -> tuple[ResponseCache | None, SessionCache]:
    """The response cache (if enabled) and the session cache: in memory, or in Redis when it is configured."""
    cache = settings.cache
    prefix = f"{settings.broker.redis_prefix}:cache"

    def store(max_entries: int, name: str) -> KeyValueStore:
        if redis_client is None:
            return MemoryKeyValueStore(max_entries)
        return RedisKeyValueStore(redis_client, f"{prefix}:{name}", name=name)

    sessions = SessionCache(store(cache.session_max_conversations, "sessions"), ttl_s=cache.session_ttl_s)
    if not cache.response_enabled:
        return None, sessions
    semantic = None
    if cache.semantic_enabled:
        from ziggurat.connection.cache.embeddings import MiniLMEmbedder
        from ziggurat.connection.cache.semantic import MemoryVectorIndex, RedisVectorIndex, SemanticMatcher

        index: VectorIndex
        if redis_client is None:
            index = MemoryVectorIndex(
                max_entries=cache.semantic_max_entries, max_total_entries=cache.response_max_entries
            )
        else:
            index = RedisVectorIndex(
                redis_client, f"{prefix}:vectors", max_entries=cache.semantic_max_entries
            )
        semantic = SemanticMatcher(MiniLMEmbedder(), index, threshold=cache.semantic_threshold)
    responses = ResponseCache(
        store(cache.response_max_entries, "responses"), ttl_s=cache.response_ttl_s, semantic=semantic
    )
    await responses.start()
    return responses, sessions


def build_rate_limits(settings: Settings, redis_client: Redis | None, metrics: Metrics) -> RateLimitGate:
    """Rate limits and quotas: counted in memory, or in Redis (exact across gateways) when it is set."""
    limiter: RateLimiter
    if redis_client is None:
        limiter = MemoryRateLimiter()
    else:
        from ziggurat.service.limits.redis import RedisRateLimiter

        limiter = RedisRateLimiter(redis_client, prefix=f"{settings.broker.redis_prefix}:limits")
    return RateLimitGate(
        limiter,
        metrics,
        stream_lease_s=settings.limits.stream_lease_s,
        default_max_tokens=settings.engine.default_max_tokens,
    )
