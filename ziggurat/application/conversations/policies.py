"""How a `ChatService` is set up: who may use which model and where usage goes (`ChatPolicy`),
and how this gateway keeps replies while they stream (`KeeperPolicy`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ziggurat.application.auth.principal import Principal
from ziggurat.application.conversations.context import ModelResolver
from ziggurat.application.conversations.reply_store import UsageSink
from ziggurat.connection.leases import Leases
from ziggurat.service.limits.policy import LimitSubject


@dataclass(slots=True, frozen=True)
class ChatPolicy:
    """Who may use which model, where token usage goes, and how much history is considered."""

    resolve_model: ModelResolver
    record_usage: UsageSink | None = None
    history_limit: int = 200
    limits_for: Callable[[Principal], LimitSubject | None] | None = None
    """The rate limits and quotas a principal's turns are held to (None: none)."""


@dataclass(slots=True, frozen=True)
class KeeperPolicy:
    """How this gateway keeps replies: its lease name, and whether other gateways can take over."""

    leases: Leases
    holder: str
    is_shared: bool
    lease_ttl_s: float = 15.0
    recovery_grace_s: float = 30.0
    """A `streaming` reply younger than this is left alone by recovery (its gateway is just starting it)."""
