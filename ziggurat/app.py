"""Composition root: the only module (with cli.py) that chooses implementations.

`build_app(settings)` returns the FastAPI app; its lifespan opens every resource
in an `AsyncExitStack`, keeps them in `Services`, and closes them in reverse
order. The ASGI entry point is `uvicorn ziggurat.app:create_app --factory`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ziggurat import __version__
from ziggurat.application.auth.principal import SYSTEM
from ziggurat.application.container import Application, local_keeping, open_application
from ziggurat.application.conversations.policies import KeeperPolicy
from ziggurat.backends import build_rate_limits, open_broker, open_caches
from ziggurat.config import Settings
from ziggurat.connection.adapter_sync import RedisAdapters, keep_adapters_in_sync, open_shared_adapters
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.http import (
    admin,
    admin_adapters,
    auth,
    conversations,
    feedback,
    health,
    messages,
    openai,
    presets,
)
from ziggurat.connection.http.deps import Services
from ziggurat.connection.http.errors import install_error_handlers
from ziggurat.connection.http.middleware import RequestContextMiddleware
from ziggurat.connection.http.raw_body import document_models
from ziggurat.connection.http.web import install_web
from ziggurat.connection.http.ws import router as ws_router
from ziggurat.connection.leases import RedisLeases
from ziggurat.connection.models import EngineModels, ModelDirectory, RedisModels, StaticModels
from ziggurat.connection.streams.publisher import StreamPublisher, flush_interval_for
from ziggurat.connection.worker import Worker, WorkerTelemetry
from ziggurat.engines import build_engine
from ziggurat.errors import ConfigurationError
from ziggurat.model.adapters import AdapterHost
from ziggurat.model.engine import Engine, TokenCounter, capacity_now
from ziggurat.service.admission import LoadShedder, QueueDeadlines
from ziggurat.service.generation import GenerationService, GenerationTelemetry
from ziggurat.service.health import Check, HealthService
from ziggurat.service.lifecycle import Draining
from ziggurat.service.metrics import Metrics
from ziggurat.service.routing.policy import RoutingPolicy
from ziggurat.supervisor import Supervisor
from ziggurat.telemetry import get_logger
from ziggurat.tracing.base import NO_TRACER, Tracer, open_tracer
from ziggurat.worker_lifecycle import (
    Advertiser,
    FatalHandler,
    drain_when_asked,
    start_and_run_worker,
    stop_worker,
)

log = get_logger(__name__)


async def _purge_periodically(application: Application, settings: Settings) -> None:
    """Remove soft-deleted conversations past their retention, on a timer, for the server's lifetime."""
    retention = timedelta(days=settings.conversations.deleted_retention_days)
    while True:
        await asyncio.sleep(settings.conversations.purge_interval_s)
        try:
            await application.conversations.purge_deleted(SYSTEM, older_than=retention)
        except SQLAlchemyError as exc:  # a database hiccup must not end the timer
            log.warning("purge_failed", error_type=type(exc).__name__)


def _log_only(message: str) -> None:
    """Default fatal handler: stay up (not ready) so the operator can read /readyz and the logs."""


def _load_shedder(settings: Settings, broker: Broker, models: ModelDirectory) -> LoadShedder:
    admission = settings.admission
    deadlines = QueueDeadlines(
        interactive_s=admission.interactive_max_wait_s,
        api_s=admission.api_max_wait_s,
        background_s=admission.background_max_wait_s,
    )
    return LoadShedder(deadlines=deadlines, queue_depth=broker.queue_depth, capacity=models.capacity)


def check_topology(settings: Settings) -> None:
    """Refuse role/backend combinations that cannot work, before anything is opened."""
    if settings.role != "all" and (settings.broker_url is None or settings.redis_url is None):
        raise ConfigurationError(
            f"--role {settings.role} needs shared services: set ZIGGURAT_BROKER_URL (RabbitMQ) and "
            "ZIGGURAT_REDIS_URL (Redis); the in-process defaults only work with --role all."
        )


MODEL_REFRESH_S = 2.0
MODEL_ADVERTISE_TTL_S = 15.0
_NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@asynccontextmanager
async def open_services(
    settings: Settings,
    metrics: Metrics,
    on_fatal: FatalHandler = _log_only,
    draining: Draining | None = None,
    tracer: Tracer = NO_TRACER,
) -> AsyncIterator[Services]:
    check_topology(settings)
    if draining is None:
        draining = Draining(grace_s=settings.http.drain_grace_s)
    instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    runs_worker = settings.role in ("all", "worker")
    runs_api = settings.role in ("all", "api")
    async with AsyncExitStack() as stack:
        redis_client: Redis | None = None
        if settings.redis_url is not None:
            redis_client = Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=5)
            stack.push_async_callback(redis_client.aclose)
        broker = await open_broker(settings, redis_client, stack)
        supervisor = Supervisor()
        stack.push_async_callback(supervisor.aclose)
        health_service = HealthService()
        health_service.add_check("broker", broker.jobs.ping)
        health_service.add_check("streams", broker.streams.ping)

        engine: Engine | None = None
        workers: list[Worker] = []
        if runs_worker:
            engine = build_engine(settings)
            stack.push_async_callback(engine.aclose)
            health_service.add_check("engine", _readiness_of(engine))
            flush_s = flush_interval_for(engine, settings.broker.stream_flush_interval_s, broker.streams)
            publisher = StreamPublisher(broker.streams, flush_interval_s=flush_s)
            stack.push_async_callback(publisher.aclose)
            worker = Worker(
                jobs=broker.jobs,
                streams=broker.streams,
                publisher=publisher,
                engine=engine,
                model=engine.info.name,
                max_deliveries=settings.broker.max_deliveries,
                telemetry=WorkerTelemetry(observer=metrics, tracer=tracer),
            )
            workers.append(worker)
            metrics.watch_worker(engine.info.name, lambda: worker.active_jobs)
            metrics.watch_engines([engine])
            supervisor.spawn(
                start_and_run_worker(engine, worker, on_fatal, _advertiser(redis_client, settings, instance)),
                name=f"worker-{engine.info.name}",
            )
            draining.watch(lambda: worker.active_jobs)
            is_shared_queue = settings.broker_url is not None
            # Unwound before the publisher and the engine close: the jobs in flight still need both.
            stack.push_async_callback(stop_worker, worker, draining, is_shared_queue)
            if is_shared_queue:
                # Other workers share the queue: stop taking jobs as soon as draining starts, so
                # the queued ones go to them. In one process this worker serves the streams that
                # are draining, so it takes jobs until they are done (`stop_worker`).
                supervisor.spawn(drain_when_asked(worker, draining), name=f"drain-{engine.info.name}")

        models: ModelDirectory
        if engine is not None and settings.role == "all":
            # An engine that serves LoRA adapters is read live: adapters come and go at run time.
            models = (
                EngineModels(engine)
                if isinstance(engine, AdapterHost)
                else StaticModels([engine.info], {engine.info.name: engine.capacity})
            )
        elif redis_client is not None:
            shared_models = RedisModels(redis_client, prefix=settings.broker.redis_prefix)
            if runs_api:
                await _refresh_quietly(shared_models)
                supervisor.spawn(shared_models.watch(MODEL_REFRESH_S), name="model-directory")
                health_service.add_check("models", _has_models(shared_models))
            models = shared_models
        else:
            models = StaticModels([])
        # Counting tokens with the engine's own tokenizer, where it has one, fits chat history exactly.
        counters: dict[str, TokenCounter] = {}
        if isinstance(engine, TokenCounter):
            counters[engine.info.name] = engine
        responses, sessions = await open_caches(settings, redis_client) if runs_api else (None, None)
        generation = GenerationService(
            broker=broker,
            models=models,
            metrics=metrics,
            token_counters=counters,
            responses=responses,
            share_cache_across_users=settings.cache.share_across_users,
            shedder=_load_shedder(settings, broker, models) if runs_api else None,
            draining=draining,
            telemetry=GenerationTelemetry(tracer=tracer, log_prompts=settings.log.log_prompts),
            routing=RoutingPolicy.from_settings(settings.routing),
            limits=build_rate_limits(settings, redis_client, metrics) if runs_api else None,
        )
        metrics.watch_queue_depth(
            lambda: {m.name: broker.queue_depth(m.name) for m in generation.list_models()}
        )
        metrics.watch_priority_depths(
            lambda: {m.name: broker.queue_depth_by_priority(m.name) for m in generation.list_models()}
        )
        application: Application | None = None
        if runs_api:
            keeping = _keeping(settings, redis_client, instance)
            application = await stack.enter_async_context(
                open_application(settings, generation, keeping=keeping, session_cache=sessions)
            )
            health_service.add_check("database", application.database.ping)
            # Closed before the application (the stack unwinds in reverse): no task outlives the database.
            application_tasks = Supervisor()
            stack.push_async_callback(application_tasks.aclose)
            if settings.conversations.purge_interval_s > 0:
                application_tasks.spawn(_purge_periodically(application, settings), name="purge-deleted")
            application_tasks.spawn(
                _recover_periodically(application, settings.conversations.recovery_interval_s, draining),
                name="recover-replies",
            )
        yield Services(
            settings=settings,
            metrics=metrics,
            broker=broker,
            generation=generation,
            health=health_service,
            application=application,
            engines=[engine] if engine is not None else [],
            workers=workers,
            draining=draining,
        )


async def _refresh_quietly(directory: RedisModels) -> None:
    with suppress(RedisError, OSError):
        await directory.refresh()


def _has_models(directory: ModelDirectory) -> Check:
    """A gateway is ready to serve once some worker has advertised a model."""

    async def check() -> bool:
        return bool(directory.models())

    return check


def _keeping(settings: Settings, redis_client: Redis | None, instance: str) -> KeeperPolicy:
    if redis_client is None:
        return local_keeping()
    leases = RedisLeases(redis_client, prefix=settings.broker.redis_prefix)
    conversations = settings.conversations
    return KeeperPolicy(
        leases=leases,
        holder=instance,
        is_shared=True,
        lease_ttl_s=conversations.reply_lease_s,
        recovery_grace_s=conversations.recovery_grace_s,
    )


def _advertiser(redis_client: Redis | None, settings: Settings, instance: str) -> Advertiser:
    """A worker in a split deployment tells the gateways which model it serves, while it lives."""
    if redis_client is None or settings.role != "worker":
        return None
    directory = RedisModels(redis_client, prefix=settings.broker.redis_prefix)

    async def advertise(engine: Engine) -> None:
        if not isinstance(engine, AdapterHost):
            await directory.keep_advertising(
                instance, [engine.info], MODEL_ADVERTISE_TTL_S, partial(capacity_now, engine)
            )
            return
        # Read live: adapters loaded at start-up, and those the admin API asks for later, are advertised.
        await keep_adapters_in_sync(
            engine,
            directory,
            RedisAdapters(redis_client, prefix=settings.broker.redis_prefix),
            worker=instance,
            ttl_s=MODEL_ADVERTISE_TTL_S,
        )

    return advertise


async def _recover_periodically(application: Application, interval_s: float, draining: Draining) -> None:
    """Adopt replies whose gateway died (or, in one process, that an earlier run left behind).

    A draining gateway adopts nothing more: it would only have to hand the reply over again.
    """
    while not draining.is_draining:
        try:
            await application.chat.recover_orphans()
        except Exception as exc:  # a database or Redis hiccup must not end the timer
            log.warning("reply_recovery_failed", error_type=type(exc).__name__)
        await asyncio.sleep(interval_s)


def _readiness_of(engine: Engine) -> Check:
    async def check() -> bool:
        return engine.is_ready

    return check


def build_app(
    settings: Settings, *, on_fatal: FatalHandler = _log_only, draining: Draining | None = None
) -> FastAPI:
    """The app; `on_fatal` hears of start-up failures that happen after the server is up (model loading).

    `draining` is the shutdown state the server flips on SIGTERM (`ziggurat serve` does).
    """
    metrics = Metrics()
    if draining is None:
        draining = Draining(grace_s=settings.http.drain_grace_s)
    tracer = open_tracer(
        is_enabled=settings.is_tracing_enabled,
        service_name=settings.tracing.service_name,
        sample_ratio=settings.tracing.sample_ratio,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with (
                open_services(settings, metrics, on_fatal, draining, tracer) as services,
                open_shared_adapters(settings) as shared_adapters,
            ):
                app.state.services = services
                app.state.shared_adapters = shared_adapters
                yield
        finally:
            if tracer.is_enabled:
                await asyncio.to_thread(tracer.shutdown)  # exports the spans still buffered

    # FastAPI's native OpenTelemetry stays off: ziggurat traces with its own provider
    # (tracing/otel.py), and the native hook otherwise inspects the global providers on
    # every request only to find them unset.
    app = FastAPI(title="ziggurat", version=__version__, lifespan=lifespan, telemetry=_NO_NATIVE_TELEMETRY)
    app.state.draining = draining
    install_error_handlers(app, metrics=metrics)
    if settings.role != "worker":  # a worker serves only its health and metrics
        app.include_router(openai.router)
        document_models(app, *openai.BODY_MODELS)
        app.include_router(auth.router)
        app.include_router(conversations.router)
        app.include_router(messages.router)
        app.include_router(presets.router)
        app.include_router(feedback.router)
        app.include_router(admin.router)
        app.include_router(admin_adapters.router)
        app.include_router(ws_router)
    app.include_router(health.router)
    if settings.role != "worker":
        install_web(app, settings.web)  # last: its catch-all page route must shadow nothing
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_request_bytes=settings.http.max_request_bytes,
        tracer=tracer,
    )
    return app


def create_app() -> FastAPI:
    """ASGI factory for `uvicorn ziggurat.app:create_app --factory` (reads the environment)."""
    return build_app(Settings())
