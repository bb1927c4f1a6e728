"""The application layer, assembled: database, migrations and the feature services.

`open_application` is the one place that builds the application services; the
composition root (`app.py`) calls it inside its lifespan with the generation
service it built, and the HTTP edge reaches the services through
`Services.application`. Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ziggurat.application.admin.users import AdminUserService
from ziggurat.application.audit.log import AuditLog
from ziggurat.application.auth.api_keys import ApiKeyService
from ziggurat.application.auth.authenticator import Authenticator
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.limits import LimitPolicy
from ziggurat.application.auth.lockout import LoginThrottle, MemoryLoginThrottle
from ziggurat.application.auth.oidc import OidcService
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.service import AuthService
from ziggurat.application.auth.sessions import SessionService
from ziggurat.application.auth.signing_key import load_or_create_signing_key
from ziggurat.application.auth.tokens import AccessTokens
from ziggurat.application.catalog.service import ModelCatalog
from ziggurat.application.conversations.chat import ChatService
from ziggurat.application.conversations.context import ContextWindow
from ziggurat.application.conversations.history import ConversationHistory
from ziggurat.application.conversations.policies import ChatPolicy, KeeperPolicy
from ziggurat.application.conversations.service import ConversationService
from ziggurat.application.conversations.titles import TitleWriter
from ziggurat.application.feedback.service import FeedbackService
from ziggurat.application.presets.service import PresetService
from ziggurat.application.roles.service import RoleService
from ziggurat.application.store.database import Database
from ziggurat.application.store.schema import upgrade_database
from ziggurat.application.usage.recorder import UsageRecorder
from ziggurat.application.usage.report import UsageReports
from ziggurat.application.users.invitations import InvitationService
from ziggurat.application.users.service import UserService
from ziggurat.config import Settings
from ziggurat.connection.cache.session import SessionCache
from ziggurat.connection.leases import MemoryLeases
from ziggurat.model.engine import Usage
from ziggurat.service.generation import GenerationService
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class Application:
    """The application services of one process, sharing one database."""

    database: Database
    users: UserService
    auth: AuthService
    authenticator: Authenticator
    api_keys: ApiKeyService
    conversations: ConversationService
    roles: RoleService
    invitations: InvitationService
    admin_users: AdminUserService
    catalog: ModelCatalog
    usage: UsageRecorder
    usage_reports: UsageReports
    audit: AuditLog
    oidc: OidcService | None
    chat: ChatService
    presets: PresetService
    feedback: FeedbackService
    limits: LimitPolicy
    """Which rate limits and quotas a principal's generations are held to."""


def local_keeping() -> KeeperPolicy:
    """Replies kept by this process alone (the single-process default)."""
    return KeeperPolicy(leases=MemoryLeases(), holder="local", is_shared=False)


def build_application(
    settings: Settings,
    *,
    database: Database,
    generation: GenerationService,
    passwords: PasswordHasher,
    keeping: KeeperPolicy | None = None,
    session_cache: SessionCache | None = None,
) -> Application:
    """Wire the services around an open database (no I/O)."""
    secret_key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key is not None
        else load_or_create_signing_key(settings.data_dir)
    )
    access_tokens = AccessTokens(
        secret_key=secret_key, algorithm=settings.auth.jwt_algorithm, ttl_s=settings.auth.access_token_ttl_s
    )
    users = UserService(
        database=database,
        passwords=passwords,
        allow_registration=settings.auth.allow_registration,
        allowed_email_domains=settings.auth.allowed_email_domains,
    )
    credential_cache = CredentialCache(ttl_s=settings.auth.credential_cache_ttl_s)
    sessions = SessionService(
        database=database,
        access_tokens=access_tokens,
        credential_cache=credential_cache,
        refresh_token_ttl_s=settings.auth.refresh_token_ttl_s,
    )
    throttle: LoginThrottle = MemoryLoginThrottle(window_s=settings.auth.lockout_window_s)
    catalog = ModelCatalog(
        database=database, generation=generation, ttl_s=settings.auth.credential_cache_ttl_s
    )
    usage = UsageRecorder(database=database)
    limits = LimitPolicy(settings.limits)
    return Application(
        database=database,
        users=users,
        auth=AuthService(
            database=database,
            users=users,
            passwords=passwords,
            sessions=sessions,
            throttle=throttle,
            settings=settings.auth,
        ),
        authenticator=Authenticator(database=database, access_tokens=access_tokens, cache=credential_cache),
        api_keys=ApiKeyService(database=database, credential_cache=credential_cache),
        conversations=ConversationService(database=database, resolve_model=catalog.resolve),
        roles=RoleService(database=database, credential_cache=credential_cache),
        invitations=InvitationService(database=database, default_ttl_s=settings.auth.invitation_ttl_s),
        admin_users=AdminUserService(database=database, sessions=sessions),
        catalog=catalog,
        usage=usage,
        usage_reports=UsageReports(database=database),
        audit=AuditLog(database=database),
        oidc=_build_oidc(settings, database=database, users=users, sessions=sessions, signing_key=secret_key),
        chat=_build_chat(
            settings,
            database=database,
            generation=generation,
            catalog=catalog,
            usage=usage,
            keeping=keeping or local_keeping(),
            history=ConversationHistory(session_cache),
            limits=limits,
        ),
        presets=PresetService(database=database, resolve_model=catalog.resolve),
        feedback=FeedbackService(database=database),
        limits=limits,
    )


def _build_chat(
    settings: Settings,
    *,
    database: Database,
    generation: GenerationService,
    catalog: ModelCatalog,
    usage: UsageRecorder,
    keeping: KeeperPolicy,
    history: ConversationHistory,
    limits: LimitPolicy,
) -> ChatService:
    def record_usage(principal: Principal, model: str, tokens: Usage) -> None:
        usage.record(principal, model, tokens, source="chat")

    return ChatService(
        database=database,
        generation=generation,
        context=ContextWindow(generation=generation, default_max_tokens=settings.engine.default_max_tokens),
        titles=TitleWriter(
            database=database, generation=generation, is_enabled=settings.conversations.auto_title
        ),
        policy=ChatPolicy(
            resolve_model=catalog.resolve,
            record_usage=record_usage,
            history_limit=settings.conversations.history_max_messages,
            limits_for=limits.subject_for,
        ),
        keeping=keeping,
        history=history,
    )


def _build_oidc(
    settings: Settings, *, database: Database, users: UserService, sessions: SessionService, signing_key: str
) -> OidcService | None:
    if not settings.oidc.is_enabled:
        return None
    from ziggurat.application.auth.oidc_provider import OidcProvider

    return OidcService(
        settings=settings.oidc,
        provider=OidcProvider(settings.oidc),
        database=database,
        users=users,
        sessions=sessions,
        signing_key=signing_key,
    )


async def close_application(application: Application) -> None:
    """Let in-flight writes finish and close outbound clients (not the database: its opener does)."""
    await application.chat.aclose()
    await application.usage.aclose()
    if application.oidc is not None:
        await application.oidc.aclose()


@asynccontextmanager
async def open_application(
    settings: Settings,
    generation: GenerationService,
    *,
    passwords: PasswordHasher | None = None,
    keeping: KeeperPolicy | None = None,
    session_cache: SessionCache | None = None,
) -> AsyncIterator[Application]:
    """Migrate the database to the current schema, then yield the services; close all on exit."""
    url = settings.resolved_database_url
    await upgrade_database(url)
    database = Database(url)
    try:
        application = build_application(
            settings,
            database=database,
            generation=generation,
            passwords=passwords or PasswordHasher(),
            keeping=keeping,
            session_cache=session_cache,
        )
        log.info("application_opened", database=database.url.get_backend_name())
        try:
            yield application
        finally:
            await close_application(application)
    finally:
        await database.aclose()
