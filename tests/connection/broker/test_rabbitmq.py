"""`RabbitJobQueue` on a real RabbitMQ; each test has queues of its own (`key_prefix`) and deletes them."""

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from tests.conftest import require_service
from ziggurat.connection.broker import rabbitmq
from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.codec import decode_job
from ziggurat.connection.broker.rabbitmq import RabbitJobQueue
from ziggurat.connection.broker.rabbitmq_delivery import RabbitDelivery
from ziggurat.connection.broker.rabbitmq_names import dead_letter_queue_name, queue_name
from ziggurat.errors import Overloaded
from ziggurat.model.engine import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.rabbitmq

MODEL = "org/model:7b"  # needs sanitising into a queue name
OPEN_DEFAULTS: dict[str, Any] = {"max_queue_depth": 100, "job_ttl_s": 30.0, "heartbeat_s": 10}

OpenQueue = Callable[..., Awaitable[RabbitJobQueue]]


def job(job_id: str, priority: Priority = Priority.API, model: str = MODEL) -> Job:
    request = GenerationRequest(
        request_id=job_id,
        model=model,
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", f"hi {job_id}")),
        params=SamplingParams(max_tokens=16, temperature=0.5, stop=("\n",), seed=7),
    )
    return Job(job_id=job_id, request=request, priority=priority)


async def take(queue: RabbitJobQueue, timeout_s: float = 5.0) -> RabbitDelivery:
    delivery = await asyncio.wait_for(queue.take(MODEL), timeout_s)
    assert isinstance(delivery, RabbitDelivery)
    return delivery


async def takes_nothing(queue: RabbitJobQueue, within_s: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(queue.take(MODEL), within_s)
    except TimeoutError:
        return True
    return False


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0) -> None:
    # Broker-side state (depth readings, a dropped connection) has no event to await: poll it.
    async with asyncio.timeout(timeout_s):
        while True:
            outcome = predicate()
            if await outcome if isinstance(outcome, Awaitable) else outcome:
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def raw_channel(rabbitmq_server_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain channel for looking at (and cleaning up) the broker behind the queue's back."""
    connection = await aio_pika.connect(rabbitmq_server_url, timeout=5)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@pytest.fixture
async def open_queue(
    rabbitmq_server_url: str, key_prefix: str, raw_channel: aio_pika.abc.AbstractChannel
) -> AsyncIterator[OpenQueue]:
    opened: list[RabbitJobQueue] = []

    async def open_(**overrides: Any) -> RabbitJobQueue:
        queue = await RabbitJobQueue.open(
            rabbitmq_server_url, prefix=key_prefix, **(OPEN_DEFAULTS | overrides)
        )
        opened.append(queue)
        return queue

    yield open_
    for queue in opened:
        await queue.aclose()
    for name in (queue_name(key_prefix, MODEL), dead_letter_queue_name(key_prefix)):
        await raw_channel.queue_delete(name)
    await raw_channel.exchange_delete(f"{key_prefix}.dead")


async def dead_letters(
    channel: aio_pika.abc.AbstractChannel, prefix: str, count: int
) -> list[AbstractIncomingMessage]:
    """The first `count` messages of the dead-letter queue (dead-lettering is asynchronous: poll)."""
    queue = await channel.declare_queue(dead_letter_queue_name(prefix), passive=True)
    found: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(3):
        while len(found) < count:
            message = await queue.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                found.append(message)
    return found


def death_reason(message: AbstractIncomingMessage) -> str:
    deaths: Any = (message.headers or {})["x-death"]
    return str(deaths[0]["reason"])


def test_queue_names_are_safe_distinct_and_deterministic() -> None:
    names = {queue_name("p", model) for model in ("a/b", "a:b", "a_b", "dead", "x" * 300)}
    assert len(names) == 5
    assert all(re.fullmatch(r"p\.jobs\.[A-Za-z0-9_.-]+", name) and len(name) < 255 for name in names)
    assert queue_name("p", "llama-3.1_8b") == "p.jobs.llama-3.1_8b"
    assert queue_name("p", "a/b") == queue_name("p", "a/b")
    assert queue_name("p", "dead") != dead_letter_queue_name("p")


async def test_submit_take_ack_round_trip(open_queue: OpenQueue) -> None:
    queue = await open_queue()
    assert await queue.ping()
    original = job("j1", Priority.INTERACTIVE)
    await queue.submit(original)
    await queue.consume(MODEL, prefetch=1)
    delivery = await take(queue)
    assert delivery.job == original
    assert not delivery.redelivered
    await delivery.ack()
    await delivery.ack()  # idempotent
    await delivery.release()  # no effect once settled
    assert await takes_nothing(queue)


async def test_highest_priority_first(open_queue: OpenQueue) -> None:
    queue = await open_queue()
    for job_id, priority in [("low1", Priority.BACKGROUND), ("low2", Priority.BACKGROUND)]:
        await queue.submit(job(job_id, priority))
    await queue.submit(job("high", Priority.INTERACTIVE))
    await queue.consume(MODEL, prefetch=1)
    taken = []
    for _ in range(3):
        delivery = await take(queue)
        taken.append(delivery.job.job_id)
        await delivery.ack()
    assert taken == ["high", "low1", "low2"]


async def test_full_queue_is_overloaded_and_depth_is_reported(open_queue: OpenQueue) -> None:
    queue = await open_queue(max_queue_depth=2)
    await queue.submit(job("a"))
    await queue.submit(job("b"))
    with pytest.raises(Overloaded) as info:
        await queue.submit(job("c"))
    assert info.value.retry_after_s == 2
    assert "full" in info.value.message
    await eventually(lambda: queue.queue_depth(MODEL) == 2)
    assert queue.queue_depth("never-seen") == 0


async def test_release_redelivers_the_same_job(open_queue: OpenQueue) -> None:
    queue = await open_queue()
    await queue.submit(job("j1"))
    await queue.consume(MODEL, prefetch=1)
    first = await take(queue)
    await first.release()
    await first.release()  # idempotent
    second = await take(queue)
    assert second.job == first.job
    assert second.redelivered
    await second.ack()


async def test_dead_letter_goes_to_the_dead_letter_queue(
    open_queue: OpenQueue, raw_channel: aio_pika.abc.AbstractChannel, key_prefix: str
) -> None:
    queue = await open_queue()
    await queue.submit(job("doomed"))
    await queue.consume(MODEL, prefetch=1)
    delivery = await take(queue)
    await delivery.dead_letter()
    await delivery.ack()  # no effect once settled
    [dead] = await dead_letters(raw_channel, key_prefix, 1)
    assert decode_job(dead.body) == job("doomed")
    assert death_reason(dead) == "rejected"
    assert await takes_nothing(queue)


async def test_malformed_message_is_dead_lettered_not_delivered(
    open_queue: OpenQueue, raw_channel: aio_pika.abc.AbstractChannel, key_prefix: str
) -> None:
    queue = await open_queue()
    await queue.submit(job("good"))  # declares the queue
    for body in (b"not json", orjson.dumps({"id": "x"})):
        await raw_channel.default_exchange.publish(
            aio_pika.Message(body, priority=9), routing_key=queue_name(key_prefix, MODEL)
        )
    await queue.consume(MODEL, prefetch=1)
    delivery = await take(queue)
    assert delivery.job.job_id == "good"
    await delivery.ack()
    dead = await dead_letters(raw_channel, key_prefix, 2)
    assert sorted(message.body for message in dead) == sorted([b"not json", orjson.dumps({"id": "x"})])


async def test_prefetch_leaves_jobs_for_other_workers(open_queue: OpenQueue) -> None:
    first, second = await open_queue(), await open_queue()
    await first.consume(MODEL, prefetch=1)
    await first.submit(job("j1"))
    held = await take(first)
    assert held.job.job_id == "j1"
    await second.consume(MODEL, prefetch=1)
    await first.submit(job("j2"))
    assert (await take(second)).job.job_id == "j2"  # `first` is full: j2 went to the other worker
    assert await takes_nothing(first)
    await first.submit(job("j3"))
    assert await takes_nothing(first)  # both hold one unacked job: j3 waits in the queue
    assert await takes_nothing(second)
    await held.ack()
    assert (await take(first)).job.job_id == "j3"


async def test_stop_consuming_gives_back_what_was_not_taken_and_keeps_what_was(
    open_queue: OpenQueue,
) -> None:
    draining, other = await open_queue(), await open_queue()
    await draining.consume(MODEL, prefetch=3)
    for job_id in ("j1", "j2", "j3"):
        await draining.submit(job(job_id))
    held = await take(draining)
    await eventually(lambda: draining._inboxes[MODEL].qsize() == 2)  # received, not taken
    await draining.stop_consuming(MODEL)
    await draining.stop_consuming(MODEL)  # idempotent
    await other.consume(MODEL, prefetch=3)
    given_back = [await take(other), await take(other)]
    assert sorted(d.job.job_id for d in given_back) == ["j2", "j3"]
    assert all(delivery.redelivered for delivery in given_back)
    await draining.submit(job("j4"))
    assert (await take(other)).job.job_id == "j4"
    assert await takes_nothing(draining)  # nothing more is sent to a stopped consumer
    await held.ack()  # what was taken is still this worker's to settle
    assert await takes_nothing(other)


async def test_ping_is_a_round_trip(open_queue: OpenQueue) -> None:
    queue = await open_queue()
    assert await queue.ping()
    await queue.aclose()
    assert not await queue.ping()


async def test_expired_job_is_not_delivered(
    open_queue: OpenQueue, raw_channel: aio_pika.abc.AbstractChannel, key_prefix: str
) -> None:
    queue = await open_queue(job_ttl_s=0.1)
    await queue.submit(job("stale"))
    await asyncio.sleep(0.3)
    await queue.consume(MODEL, prefetch=1)
    assert await takes_nothing(queue)
    [dead] = await dead_letters(raw_channel, key_prefix, 1)
    assert death_reason(dead) == "expired"  # RabbitMQ dead-letters expiry too (bounded queue)


async def test_job_of_a_worker_that_dies_goes_to_another(open_queue: OpenQueue) -> None:
    dying, healthy = await open_queue(), await open_queue()
    await dying.consume(MODEL, prefetch=1)
    await dying.submit(job("j1"))
    held = await take(dying)
    await healthy.consume(MODEL, prefetch=1)
    assert await takes_nothing(healthy)
    await dying.aclose()  # its connection goes away with the job unacked
    await held.ack()  # too late: swallowed
    delivery = await take(healthy)
    assert delivery.job.job_id == "j1"
    assert delivery.redelivered
    await delivery.ack()


async def test_existing_queue_with_other_arguments_is_adopted(open_queue: OpenQueue) -> None:
    first = await open_queue(max_queue_depth=1)
    await first.submit(job("a"))
    second = await open_queue(max_queue_depth=5)  # a changed setting: the queue keeps its own limit
    with pytest.raises(Overloaded):
        await second.submit(job("b"))
    await second.consume(MODEL, prefetch=1)
    assert (await take(second)).job.job_id == "a"


async def test_queue_deleted_behind_our_back_is_declared_again(
    open_queue: OpenQueue, raw_channel: aio_pika.abc.AbstractChannel, key_prefix: str
) -> None:
    queue = await open_queue()
    await queue.submit(job("a"))
    await raw_channel.queue_delete(queue_name(key_prefix, MODEL))
    await queue.submit(job("b"))  # returned as unroutable, then declared and published again
    await queue.consume(MODEL, prefetch=1)
    assert (await take(queue)).job.job_id == "b"


async def test_unreachable_broker_fails_to_connect() -> None:
    with pytest.raises(Exception) as info:
        await RabbitJobQueue.open("amqp://guest:secret@127.0.0.1:1/", prefix="p", **OPEN_DEFAULTS)
    assert "secret" not in str(info.value)


def _close_connections_named(fragment: str) -> int:
    """Close, from the broker side, the connections whose client properties mention `fragment`."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        check=True,
        text=True,
        timeout=10,
    )
    # Tab-separated lines: `<rabbit@host.1.2.0>\t[{"connection_name","ziggurat-jobs <prefix>"},...]`
    pids = [line.split("\t", 1)[0] for line in listing.stdout.splitlines() if fragment in line]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "ziggurat test"],
            capture_output=True,
            check=True,
            timeout=10,
        )
    return len(pids)


async def test_consumer_and_publisher_resume_after_the_connection_drops(
    open_queue: OpenQueue, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker closes our connection (as on a node restart, without restarting the shared node).

    aio-pika waits `reconnect_interval` after connecting before it reconnects
    (6 s here), so the connection is reliably down for a while after the close.
    """
    if shutil.which("rabbitmqctl") is None:
        require_service(
            "rabbitmqctl", "PATH", FileNotFoundError("needed to close a connection from the broker side")
        )
    monkeypatch.setattr(rabbitmq, "_RECONNECT_INTERVAL_S", 6.0)
    monkeypatch.setattr(rabbitmq, "_RECONNECT_GRACE_S", 0.2)
    queue = await open_queue()
    await queue.consume(MODEL, prefetch=1)
    await queue.submit(job("j1"))
    held = await take(queue)
    try:
        closed = await asyncio.to_thread(_close_connections_named, key_prefix)
    except (OSError, subprocess.SubprocessError) as exc:
        require_service("rabbitmqctl", "close_connection", exc)
    assert closed == 1
    await eventually(lambda: held.is_stale)  # its channel died with the connection
    assert not await queue.ping()
    with pytest.raises(Overloaded) as info:
        await queue.submit(job("during-outage"))
    assert info.value.retry_after_s == 5
    assert "unreachable" in info.value.message
    await eventually(queue.ping, timeout_s=10)
    await held.ack()  # its channel is gone: swallowed, and RabbitMQ requeued the job
    redelivered = await take(queue, timeout_s=10)
    assert redelivered.job.job_id == "j1"
    assert redelivered.redelivered
    await redelivered.ack()
    await queue.submit(job("j2"))
    assert (await take(queue)).job.job_id == "j2"
