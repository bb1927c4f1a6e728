"""Automatic titles: after a conversation's first exchange, the model names it, in the background.

The title job goes through the same `GenerationService` as chat, at
`Priority.BACKGROUND`, so it only ever uses engine capacity that no user is
waiting for, and a full queue just means no title (the first words of the
message stay). Titles are not held to the user's rate limits or quotas: the
platform asks for them, and the usage reports leave them out too. The title
is stored with a compare-and-set that skips conversations the user renamed
meanwhile (or deleted).

`TitleWriter` owns its tasks through a `Supervisor`: failures are logged when
they happen, and `aclose()` cancels whatever is still running at shutdown
(a missing title is harmless). `wait_idle()` lets tests and a graceful
shutdown wait for titles in flight.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ziggurat.application.conversations.repository import ConversationRepository
from ziggurat.application.store.database import Database
from ziggurat.connection.broker.base import Priority
from ziggurat.errors import ZigguratError
from ziggurat.model.engine import ChatMessage, GenerationRequest, SamplingParams
from ziggurat.service.generation import GenerationService
from ziggurat.supervisor import Supervisor
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

TITLE_MAX_CHARS = 80
TITLE_MAX_TOKENS = 24
_EXCERPT_CHARS = 1500
INSTRUCTION = (
    "Write a short title (at most six words) for the conversation below. "
    "Reply with the title only: no quotes, no trailing punctuation."
)
_PREFIX = re.compile(r"^\s*(title|标题)\s*[:：]\s*", re.IGNORECASE)
_WRAPPING = "\"'“”‘’`*#_ "


@dataclass(slots=True, frozen=True)
class TitleJob:
    user_id: str
    conversation_id: str
    model: str
    question: str
    answer: str


def title_request(job: TitleJob) -> GenerationRequest:
    exchange = f"User: {job.question[:_EXCERPT_CHARS]}\n\nAssistant: {job.answer[:_EXCERPT_CHARS]}"
    return GenerationRequest(
        request_id=uuid.uuid4().hex,
        model=job.model,
        messages=(ChatMessage("system", INSTRUCTION), ChatMessage("user", exchange)),
        params=SamplingParams(max_tokens=TITLE_MAX_TOKENS, temperature=0),
    )


def clean_title(text: str) -> str | None:
    """The first line of the model's answer, without quotes, prefixes or end punctuation."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _PREFIX.sub("", line).strip(_WRAPPING).rstrip(".!?。！？:：;；,，").strip(_WRAPPING)
    line = " ".join(line.split())
    if not line:
        return None
    if len(line) > TITLE_MAX_CHARS:
        line = line[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return line


class TitleWriter:
    def __init__(self, *, database: Database, generation: GenerationService, is_enabled: bool = True) -> None:
        self._database = database
        self._generation = generation
        self._is_enabled = is_enabled
        self._supervisor = Supervisor()
        self._pending: set[asyncio.Task[Any]] = set()

    def schedule(self, job: TitleJob) -> None:
        if not self._is_enabled:
            return
        task = self._supervisor.spawn(self._write(job), name=f"title-{job.conversation_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def wait_idle(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self._supervisor.aclose()

    async def _write(self, job: TitleJob) -> None:
        try:
            stream = await self._generation.submit(title_request(job), priority=Priority.BACKGROUND)
            text, end = await stream.collect()
        except ZigguratError as exc:
            # Overloaded, or the model failed: the conversation keeps its provisional title.
            log.info("title_skipped", conversation_id=job.conversation_id, reason=type(exc).__name__)
            return
        title = clean_title(text) if end.finish_reason in ("stop", "length") else None
        if title is None:
            log.info("title_skipped", conversation_id=job.conversation_id, reason="empty")
            return
        async with self._database.session() as session:
            is_stored = await ConversationRepository(session).set_generated_title(
                job.user_id, job.conversation_id, title
            )
            await session.commit()
        log.info("title_generated", conversation_id=job.conversation_id, is_stored=is_stored)
