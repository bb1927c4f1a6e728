"""No message lost across processes: gateways and workers killed mid-stream (SIGKILL), for real.

Two gateways (`--role api`) and workers (`--role worker`) run as separate
processes sharing PostgreSQL, Redis and RabbitMQ. The demo engine is
deterministic, so "exactly the expected text" is known in advance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.connection.http.conftest import Account, register
from tests.sse import Frame, sse_frames
from tests.topology.cluster import EXPECTED, QUESTION, Cluster
from tests.topology.conftest import topology_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow]


topology = topology_fixture(
    ZIGGURAT_ENGINE__DEMO_INTER_TOKEN_S="0.08",  # long enough answers to crash something mid-way
    ZIGGURAT_ENGINE__MAX_CONCURRENCY="4",
    ZIGGURAT_CONVERSATIONS__REPLY_LEASE_S="2",
    ZIGGURAT_CONVERSATIONS__RECOVERY_INTERVAL_S="0.5",
    ZIGGURAT_CONVERSATIONS__RECOVERY_GRACE_S="1",
)


def _start_chat(base_url: str, account: Account) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base_url, headers=account.jwt_headers, timeout=60)
    conversation_id = client.post("/api/conversations", json={}).json()["id"]
    return client, conversation_id


def _read_deltas(
    frames: Iterator[Frame], count: int | None
) -> tuple[list[str], str | None, dict[str, object] | None]:
    """Read `count` deltas (None: to the end); returns texts, last entry id, and the `done` body if seen."""
    texts: list[str] = []
    last_id = None
    for frame in frames:
        if frame.event == "delta":
            texts.append(json.loads(frame.data)["content"])
            last_id = frame.id
            if count is not None and len(texts) == count:
                return texts, last_id, None
        elif frame.event == "done":
            return texts, last_id, json.loads(frame.data)
        elif frame.event == "error":
            raise AssertionError(f"the stream failed: {frame.data}")
    return texts, last_id, None


def _assistant_messages(client: httpx.Client, conversation_id: str) -> list[dict[str, object]]:
    detail = client.get(f"/api/conversations/{conversation_id}").json()
    return [m for m in detail["messages"] if m["role"] == "assistant"]


def test_a_worker_killed_mid_stream_is_replaced_and_the_answer_is_seamless(topology: Cluster) -> None:
    first_worker = topology.start("worker")
    gateway = topology.start("api")
    account = register(gateway.url, "alice@example.com")
    client, conversation_id = _start_chat(gateway.url, account)
    with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages", json={"content": QUESTION}
    ) as response:
        assert response.status_code == 200
        frames = sse_frames(response.iter_lines())
        before, _, _ = _read_deltas(frames, 5)
        successor = topology.start("worker")  # ready before the crash
        first_worker.kill()
        after, _, done = _read_deltas(frames, None)
        assert done is not None
        assert "".join(before + after) == EXPECTED  # nothing repeated, nothing missing
        assert done["content"] == EXPECTED and done["status"] == "complete"
    stored = _assistant_messages(client, conversation_id)
    client.close()
    assert len(stored) == 1 and stored[0]["content"] == EXPECTED
    assert "job_resumed" in successor.log()  # it continued the answer rather than starting over


def test_a_gateway_killed_mid_stream_the_client_resumes_through_the_other(topology: Cluster) -> None:
    topology.start("worker")
    doomed = topology.start("api")
    survivor = topology.start("api")
    account = register(doomed.url, "bob@example.com")
    client, conversation_id = _start_chat(doomed.url, account)
    with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages", json={"content": QUESTION}
    ) as response:
        frames = sse_frames(response.iter_lines())
        reply_id = json.loads(next(frames).data)["assistant_message_id"]
        before, last_id, _ = _read_deltas(frames, 5)
        doomed.kill()
    client.close()
    assert last_id is not None

    with httpx.Client(base_url=survivor.url, headers=account.jwt_headers, timeout=60) as other:
        with other.stream(
            "GET", f"/api/messages/{reply_id}/stream", headers={"Last-Event-ID": last_id}
        ) as response:
            assert response.status_code == 200
            after, _, done = _read_deltas(sse_frames(response.iter_lines()), None)
        assert done is not None
        assert "".join(before + after) == EXPECTED
        # The reply was stored by the surviving gateway (it adopted it), once.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stored = _assistant_messages(other, conversation_id)
            if stored and stored[0]["status"] != "streaming":
                break
            time.sleep(0.2)
        assert len(stored) == 1
        assert (stored[0]["status"], stored[0]["content"]) == ("complete", EXPECTED)


def test_a_stop_through_another_gateway_reaches_the_worker(topology: Cluster) -> None:
    worker = topology.start("worker")
    first, second = topology.start("api"), topology.start("api")
    account = register(first.url, "carol@example.com")
    client, conversation_id = _start_chat(first.url, account)
    with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages", json={"content": QUESTION}
    ) as response:
        frames = sse_frames(response.iter_lines())
        reply_id = json.loads(next(frames).data)["assistant_message_id"]
        before, _, _ = _read_deltas(frames, 3)
        with httpx.Client(base_url=second.url, headers=account.jwt_headers, timeout=60) as other:
            stopped = other.post(f"/api/conversations/{conversation_id}/messages/{reply_id}/stop")
        assert stopped.status_code == 200
        assert stopped.json()["status"] == "cancelled"
        after, _, done = _read_deltas(frames, None)
    client.close()
    assert done is not None and done["status"] == "cancelled"
    assert EXPECTED.startswith(done["content"]) and len(done["content"]) < len(EXPECTED)
    assert "".join(before + after) == done["content"]
    assert "job_cancelled" in worker.log()
