"""The names of ziggurat's RabbitMQ queues, the same in every gateway and worker process."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_NAME_PART = 120


def queue_name(prefix: str, model: str) -> str:
    """`{prefix}.jobs.{model}`, with the model made safe for a queue name, the same in every process.

    Any name that had to change (unsafe characters, too long, or `dead`, which
    would be the dead-letter queue) gets a hash of the original, so two models
    never share a queue.
    """
    part = _UNSAFE.sub("_", model)[:_MAX_NAME_PART]
    if part != model or part in ("", "dead"):
        part = f"{part}-{hashlib.sha256(model.encode()).hexdigest()[:10]}"
    return f"{prefix}.jobs.{part}"


def dead_letter_queue_name(prefix: str) -> str:
    return f"{prefix}.jobs.dead"
