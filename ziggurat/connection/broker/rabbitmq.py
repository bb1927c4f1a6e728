"""RabbitMQ job queue: one durable priority queue per model, shared by every worker of that model.

Why RabbitMQ for jobs: publisher confirms make `submit` durable before the
gateway answers; a bounded queue with `x-overflow=reject-publish` nacks the
publish when full, which becomes `Overloaded` (503 + Retry-After) instead of
unbounded backlog; per-consumer prefetch keeps jobs beyond a worker's capacity
in the shared queue for other workers; and a channel that dies with unacked
jobs has them redelivered, which is how a crashed worker's job gets resumed.

Each message carries a TTL (`job_ttl_s`) so work for clients that gave up is
dropped rather than served late. Rejected jobs (and, because RabbitMQ
dead-letters expiry too, expired ones) go through the `{prefix}.dead` exchange
to `{prefix}.jobs.dead`, which is bounded so it can never fill the broker.

The connection is `connect_robust`: after a broker restart aio-pika reopens
the channels, re-declares the queues and restarts the consumers. Deliveries
taken before the loss belong to the dead channel and cannot be settled any
more; RabbitMQ has already put them back, so settling them is a silent no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import ChannelPreconditionFailed, PublishError
from aiormq.exceptions import DeliveryError
from yarl import URL

from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.broker.base import Delivery, Job
from ziggurat.connection.broker.codec import decode_job, encode_job
from ziggurat.connection.broker.rabbitmq_delivery import (
    BROKER_ERRORS,
    SETTLE_TIMEOUT_S,
    RabbitDelivery,
    settle_quietly,
)
from ziggurat.connection.broker.rabbitmq_names import dead_letter_queue_name, queue_name
from ziggurat.errors import Overloaded
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

MAX_PRIORITY = 10
DEAD_LETTERS_KEPT = 10_000
"""Bound on the dead-letter queue (oldest dropped first): it is for inspection, not storage."""

_CONNECT_TIMEOUT_S = 10.0
_PUBLISH_TIMEOUT_S = 10.0
_RECONNECT_GRACE_S = 2.0
"""How long `submit` waits for a connection being re-established before answering 503."""
_RECONNECT_INTERVAL_S = 2.0
_PING_TIMEOUT_S = 1.0
_DEPTH_REFRESH_S = 1.0
_FULL_RETRY_AFTER_S = 2.0
_UNREACHABLE_RETRY_AFTER_S = 5.0


def _redact(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


class RabbitJobQueue:
    """`JobQueue` on RabbitMQ. Call `connect()` (or use `open()`) before anything else."""

    def __init__(
        self, url: str, *, prefix: str, max_queue_depth: int, job_ttl_s: float, heartbeat_s: int
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._max_queue_depth = max_queue_depth
        self._job_ttl_s = job_ttl_s
        self._heartbeat_s = heartbeat_s
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._depth_channel: AbstractRobustChannel | None = None
        self._consume_channels: dict[str, AbstractRobustChannel] = {}
        self._consumers: dict[str, tuple[AbstractRobustQueue, str]] = {}
        """Model → (queue, consumer tag) of each running consumer."""
        self._stopped: set[str] = set()
        """Models whose consumer was stopped for good (a draining worker)."""
        self._inboxes: dict[str, asyncio.Queue[RabbitDelivery]] = {}
        self._declared: dict[str, str] = {}
        """Model → queue name, for queues declared on the publish channel."""
        self._watched: dict[str, str] = {}
        """Model → queue name, for every model submitted to or consumed (depth refresh)."""
        self._depths: dict[str, int] = {}
        self._declare_lock = asyncio.Lock()
        self._depth_task: asyncio.Task[None] | None = None
        self._is_closed = False

    @classmethod
    async def open(
        cls, url: str, *, prefix: str, max_queue_depth: int, job_ttl_s: float, heartbeat_s: int
    ) -> RabbitJobQueue:
        queue = cls(
            url, prefix=prefix, max_queue_depth=max_queue_depth, job_ttl_s=job_ttl_s, heartbeat_s=heartbeat_s
        )
        await queue.connect()
        return queue

    async def connect(self) -> None:
        """Connect, declare the dead-letter exchange and queue, and start refreshing queue depths.

        Raises the connection error if RabbitMQ is unreachable now: unlike a
        later outage (reconnected in the background), this is a start-up problem.
        """
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                heartbeat=self._heartbeat_s,
                reconnect_interval=_RECONNECT_INTERVAL_S,
                timeout=_CONNECT_TIMEOUT_S,
                client_properties={"connection_name": f"ziggurat-jobs {self._prefix}"},
            )
        except Exception as exc:
            log.error("job_queue_connect_failed", url=_redact(self._url), error_type=type(exc).__name__)
            raise
        try:
            await self._open_channels(self._connection)
        except BaseException:
            await self._connection.close()  # the caller never gets an object to close
            raise
        self._depth_task = asyncio.create_task(self._refresh_depths(), name="rabbitmq-queue-depths")
        log.info("job_queue_connected", url=_redact(self._url), prefix=self._prefix)

    async def _open_channels(self, connection: AbstractRobustConnection) -> None:
        self._publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._depth_channel = await connection.channel(publisher_confirms=False)
        dead = await self._publish_channel.declare_exchange(
            self._dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await self._declare(
            self._publish_channel,
            dead_letter_queue_name(self._prefix),
            {"x-queue-type": "classic", "x-max-length": DEAD_LETTERS_KEPT},
        )
        await dead_queue.bind(dead, routing_key="")

    @property
    def _dead_exchange(self) -> str:
        return f"{self._prefix}.dead"

    def _job_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",  # priorities need a classic queue, whatever the vhost default
            "x-max-priority": MAX_PRIORITY,
            "x-max-length": self._max_queue_depth,
            "x-overflow": "reject-publish",
            "x-dead-letter-exchange": self._dead_exchange,
        }

    async def _declare(
        self, channel: AbstractRobustChannel, name: str, arguments: dict[str, Any]
    ) -> AbstractRobustQueue:
        """Declare `name` durable on `channel`, or adopt it passively if it exists with other arguments.

        Queue arguments are fixed at creation, so a changed setting (say
        `max_queue_depth`) would otherwise fail every declare with
        PRECONDITION_FAILED and, worse, every reconnect (aio-pika re-declares on
        restore). The probe runs on a throwaway channel because the broker
        closes the channel a failed declare was sent on.
        """
        underlay = await channel.get_underlay_channel()
        probe = await underlay.connection.channel(publisher_confirms=False)
        try:
            await probe.queue_declare(name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed as exc:
            log.warning(
                "job_queue_arguments_differ",
                queue=name,
                detail=str(exc),
                hint="the existing queue is used as is; delete it (or use a policy) to apply new settings",
            )
            return await channel.declare_queue(name, passive=True)
        finally:
            if not probe.is_closed:
                await probe.close()
        return await channel.declare_queue(name, durable=True, arguments=arguments)

    async def _declare_job_queue(self, channel: AbstractRobustChannel, model: str) -> AbstractRobustQueue:
        name = queue_name(self._prefix, model)
        queue = await self._declare(channel, name, self._job_queue_arguments())
        if model not in self._watched:
            self._watched[model] = name
            result = queue.declaration_result
            self._depths[model] = int(result.message_count or 0) if result is not None else 0
        return queue

    def _channel(self) -> AbstractRobustChannel:
        if self._publish_channel is None or self._connection is None:
            raise RuntimeError("RabbitJobQueue.connect() was not called")
        return self._publish_channel

    async def submit(self, job: Job) -> None:
        channel = self._channel()
        message = aio_pika.Message(
            encode_job(job),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=int(job.priority),
            expiration=self._job_ttl_s,
            message_id=job.job_id,
        )
        model = job.queue_name
        try:
            await self._wait_ready(channel)
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                for attempt in (1, 2):
                    name = await self._job_queue_for_publish(channel, model)
                    try:
                        await channel.default_exchange.publish(message, routing_key=name, mandatory=True)
                        return
                    except PublishError:
                        # Returned unroutable: the queue was deleted behind our back. Declare it again.
                        self._declared.pop(model, None)
                        if attempt == 2:
                            raise
        except PublishError as exc:
            log.error("job_unroutable", job_id=job.job_id, model=model, error_type=type(exc).__name__)
            raise self._unreachable() from exc
        except DeliveryError as exc:
            # A nack: with `x-overflow=reject-publish` this is how a full queue answers.
            log.warning("job_queue_full", job_id=job.job_id, model=model)
            raise Overloaded(
                f"The queue for model '{model}' is full; try again shortly.",
                retry_after_s=_FULL_RETRY_AFTER_S,
            ) from exc
        except BROKER_ERRORS as exc:
            log.warning("job_submit_failed", job_id=job.job_id, model=model, error_type=type(exc).__name__)
            raise self._unreachable() from exc

    @staticmethod
    async def _wait_ready(channel: AbstractRobustChannel) -> None:
        """Give a reconnect in progress a moment rather than 503 on every blip.

        The channel, not the connection: aio-pika marks the connection up
        before it has reopened the channels on it.
        """
        async with asyncio.timeout(_RECONNECT_GRACE_S):
            await channel.ready()

    @staticmethod
    def _unreachable() -> Overloaded:
        return Overloaded(
            "The job queue is unreachable; try again shortly.", retry_after_s=_UNREACHABLE_RETRY_AFTER_S
        )

    async def _job_queue_for_publish(self, channel: AbstractRobustChannel, model: str) -> str:
        name = self._declared.get(model)
        if name is not None:
            return name
        async with self._declare_lock:
            name = self._declared.get(model)
            if name is None:
                name = (await self._declare_job_queue(channel, model)).name
                self._declared[model] = name
        return name

    async def consume(self, model: str, *, prefetch: int) -> None:
        """Start a consumer for `model` on a channel of its own (its own prefetch). Idempotent per model."""
        if model in self._consume_channels:
            return
        if self._connection is None:
            raise RuntimeError("RabbitJobQueue.connect() was not called")
        channel = await self._connection.channel(publisher_confirms=False)
        self._consume_channels[model] = channel
        await channel.set_qos(prefetch_count=prefetch)
        queue = await self._declare_job_queue(channel, model)
        inbox = self._inboxes.setdefault(model, asyncio.Queue())

        async def on_message(message: AbstractIncomingMessage) -> None:
            if model in self._stopped:  # sent before the cancel reached RabbitMQ: back for another worker
                await settle_quietly("release", message.message_id, lambda: message.nack(requeue=True))
                return
            try:
                job = decode_job(message.body)
            except Exception as exc:  # any malformed body: never let it stop the consumer
                log.warning(
                    "job_malformed",
                    queue=queue.name,
                    message_id=message.message_id,
                    error_type=type(exc).__name__,
                )
                await settle_quietly("dead_letter", message.message_id, lambda: message.reject(requeue=False))
                return
            inbox.put_nowait(RabbitDelivery(message, job))

        self._consumers[model] = (queue, await queue.consume(on_message, no_ack=False))
        if model in self._stopped:  # stopped while this consumer was starting
            await self.stop_consuming(model)

    async def stop_consuming(self, model: str) -> None:
        """Cancel `model`'s consumer for good and release the jobs it received that were not taken.

        The channel stays open, so deliveries already taken can still be acked
        or released; RabbitMQ sends nothing more to this consumer once the
        cancel is confirmed.
        """
        self._stopped.add(model)
        consumer = self._consumers.pop(model, None)
        if consumer is not None:
            queue, tag = consumer
            try:
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await queue.cancel(tag)
            except BROKER_ERRORS as exc:  # the channel is gone: RabbitMQ put back what it held already
                log.info("job_consumer_cancel_failed", model=model, error_type=type(exc).__name__)
        inbox = self._inboxes.get(model)
        while inbox is not None and not inbox.empty():
            await inbox.get_nowait().release()

    async def take(self, model: str) -> Delivery:
        inbox = self._inboxes.get(model)
        if inbox is None:
            raise RuntimeError(f"consume({model!r}) was not called")
        while True:
            delivery = await inbox.get()
            if not delivery.is_stale:
                return delivery
            log.debug("job_delivery_stale", job_id=delivery.job.job_id)

    def queue_depth(self, model: str) -> int:
        """Ready jobs in `model`'s queue at the last refresh (about a second old); 0 if unwatched."""
        return self._depths.get(model, 0)

    async def _refresh_depths(self) -> None:
        while True:
            await asyncio.sleep(_DEPTH_REFRESH_S)
            assert self._depth_channel is not None
            for model, name in list(self._watched.items()):
                try:
                    async with asyncio.timeout(_DEPTH_REFRESH_S * 2):
                        channel = await self._depth_channel.get_underlay_channel()
                        result = await channel.queue_declare(name, passive=True)
                    self._depths[model] = int(result.message_count or 0)
                except Exception as exc:  # keep the last reading; this task must outlive any broker error
                    log.debug("queue_depth_refresh_failed", queue=name, error_type=type(exc).__name__)

    async def ping(self) -> bool:
        """Whether RabbitMQ answers now: a round trip (a passive declare of a built-in exchange).

        The connection's own state alone says yes to a broker that stopped
        answering until heartbeats time out (two heartbeats).
        """
        connection, channel = self._connection, self._depth_channel
        if connection is None or channel is None or connection.is_closed or not connection.connected.is_set():
            return False
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                underlay = await channel.get_underlay_channel()
                await underlay.exchange_declare("amq.direct", passive=True)
        except BROKER_ERRORS:
            return False
        return True

    async def aclose(self) -> None:
        """Stop the depth task, close the channels (unacked jobs go back to the queue) and the connection."""
        if self._is_closed:
            return
        self._is_closed = True
        if self._depth_task is not None:
            await cancel_and_wait(self._depth_task)
        channels = [*self._consume_channels.values(), self._publish_channel, self._depth_channel]
        for channel in channels:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*BROKER_ERRORS):
                    async with asyncio.timeout(SETTLE_TIMEOUT_S):
                        await channel.close()
        if self._connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await self._connection.close()
