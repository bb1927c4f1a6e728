"""A job delivered by RabbitMQ, and settling it (ack, release, dead-letter) whatever became of its channel.

After a broker restart the robust connection reopens its channels, but deliveries
taken before belong to the dead one: RabbitMQ has put them back already, so
settling them is skipped quietly (logged at info), never raised to the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from ziggurat.connection.broker.base import Job
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

SETTLE_TIMEOUT_S = 5.0
# Everything a lost or closing connection can raise from aio-pika/aiormq calls.
# `ChannelInvalidStateError` is a `RuntimeError`, not an `AMQPError`.
BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


async def settle_quietly(action: str, message_id: str | None, settle: Callable[[], Awaitable[None]]) -> None:
    """Ack/nack/reject, ignoring a dead channel: RabbitMQ already requeued everything it held."""
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            await settle()
    except BROKER_ERRORS as exc:
        log.info("job_settle_skipped", action=action, job_id=message_id, error_type=type(exc).__name__)


class RabbitDelivery:
    """One job taken from RabbitMQ; settled at most once, and quietly on a dead channel."""

    __slots__ = ("_is_settled", "_job", "_message")

    def __init__(self, message: AbstractIncomingMessage, job: Job) -> None:
        self._message = message
        self._job = job
        self._is_settled = False

    @property
    def job(self) -> Job:
        return self._job

    @property
    def redelivered(self) -> bool:
        """RabbitMQ's flag: this job was delivered before (to a worker that released it or died)."""
        return bool(self._message.redelivered)

    @property
    def is_stale(self) -> bool:
        """Whether it came on a channel that has since closed: RabbitMQ requeued it, so skip it."""
        try:
            self._message.channel  # noqa: B018 - raises once the delivering channel is closed
        except ChannelInvalidStateError:
            return True
        return False

    async def ack(self) -> None:
        await self._settle("ack", self._message.ack)

    async def release(self) -> None:
        await self._settle("release", lambda: self._message.nack(requeue=True))

    async def dead_letter(self) -> None:
        await self._settle("dead_letter", lambda: self._message.reject(requeue=False))

    async def _settle(self, action: str, settle: Callable[[], Awaitable[None]]) -> None:
        if self._is_settled:
            return
        self._is_settled = True
        await settle_quietly(action, self._job.job_id, settle)
