"""The `engine` section of the settings (`ZIGGURAT_ENGINE__*`): which engine serves the model, and how.

Part of `config.py` (which re-exports these names), kept apart because the
engine section alone is as long as all the others: the embedded transformers
engine's knobs and the remote engine's servers, timeouts and load policy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, SecretStr

EngineKind = Literal["auto", "demo", "transformers", "openai"]


class OpenAIEndpointSettings(BaseModel):
    """One remote OpenAI-compatible server (`ZIGGURAT_ENGINE__OPENAI_ENDPOINTS`)."""

    url: str = Field(description="Base URL ending in /v1.")
    api_key: SecretStr | None = None
    weight: PositiveFloat = Field(default=1.0, description="Share of requests relative to other endpoints.")
    max_concurrency: PositiveInt | None = Field(
        default=None, description="Requests this server may hold at most (default: engine max_concurrency)."
    )
    metrics_url: str | None = Field(
        default=None, description="Its Prometheus metrics (default: /metrics beside /v1, as vLLM and SGLang)."
    )


class EngineSettings(BaseModel):
    """Which engine serves the model, and how."""

    kind: EngineKind = Field(
        default="auto",
        description="auto: transformers if a model is configured or SmolLM2 is installed, else demo.",
    )
    model: str | None = Field(
        default=None, description="Local model directory, .gguf file, hub id, or the remote model name."
    )
    served_name: str | None = Field(default=None, description="Name listed in /v1/models.")
    max_batch_size: PositiveInt = 8
    max_concurrency: PositiveInt = 64
    device: str = "auto"
    dtype: str = "auto"
    context_length: PositiveInt | None = None
    default_max_tokens: PositiveInt = 512
    cpu_threads: PositiveInt | None = None
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description='transformers: LoRA adapters to load at start, JSON {"name": "/adapter/dir"}; '
        "served as <served_name>:<name>.",
    )
    runner: Literal["auto", "hf"] = Field(
        default="auto",
        description="auto: the lean Llama-family runner where the model allows it; hf: model.forward.",
    )
    kv_cache_gib: PositiveFloat | None = Field(
        default=None,
        description="KV-cache budget of the runner (default: 60% of free GPU memory, 2 GiB on CPU).",
    )
    prefill_chunk_tokens: PositiveInt = Field(
        default=512,
        description="Prompt tokens prefilled per step, between decode steps of the running batch.",
    )
    cuda_graphs: bool = Field(
        default=True, description="Capture the runner's decode step as CUDA graphs (CUDA only)."
    )
    demo_time_to_first_token_s: float = Field(default=0.05, ge=0)
    demo_inter_token_s: float = Field(default=0.02, ge=0)
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_timeout_s: PositiveFloat = Field(
        default=600.0, description="Default of the first-token and inter-token timeouts of remote servers."
    )
    openai_endpoints: list[OpenAIEndpointSettings] = Field(
        default_factory=list,
        description='Servers of the same model: JSON [{"url", "api_key"?, "weight"?}] (instead of base_url).',
    )
    openai_connect_timeout_s: PositiveFloat = Field(default=10.0, description="Connecting to a server.")
    openai_first_token_timeout_s: PositiveFloat | None = Field(
        default=None, description="Waiting for the first byte of an answer. Default: openai_timeout_s."
    )
    openai_inter_token_timeout_s: PositiveFloat | None = Field(
        default=None, description="Silence allowed in a started answer. Default: openai_timeout_s."
    )
    openai_total_timeout_s: float = Field(
        default=0, ge=0, description="Longest a whole answer may take (0: no limit)."
    )
    openai_max_attempts: PositiveInt = Field(
        default=3, description="Endpoints one request may try before its first token (several endpoints)."
    )
    openai_breaker_failures: PositiveInt = Field(
        default=5, description="Consecutive failures that open an endpoint's circuit breaker."
    )
    openai_breaker_cooldown_s: PositiveFloat = Field(
        default=30.0, description="How long an open breaker rejects before letting one probe through."
    )
    openai_load_poll_interval_s: float = Field(
        default=2.0,
        ge=0,
        description="How often servers' health and load metrics are read (0: never; max_concurrency holds).",
    )
    openai_max_kv_cache_usage: float = Field(
        default=0.95, gt=0, le=1, description="A server whose KV cache is this full gets no new requests."
    )
