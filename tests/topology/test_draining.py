"""SIGTERM during streams, for real: every stream in flight finishes or is handed over; none is cut.

A gateway (`--role api`) that is told to stop keeps serving the streams it
has open, refuses new work with 503 + Retry-After and says so on `/readyz`,
then exits 0. A worker that is told to stop lets its jobs run for the grace
period and releases the rest; another worker resumes them after the text
already streamed, so readers still get exactly the whole answer.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.connection.http.conftest import Account, register
from tests.sse import Frame, sse_frames
from tests.topology.cluster import EXPECTED, QUESTION, Cluster, Process
from tests.topology.conftest import topology_fixture
from tests.topology.test_no_loss import _read_deltas, _start_chat

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow]

topology = topology_fixture(
    ZIGGURAT_ENGINE__DEMO_INTER_TOKEN_S="0.03",  # about 3 s per answer
    ZIGGURAT_ENGINE__MAX_CONCURRENCY="4",
    ZIGGURAT_HTTP__DRAIN_GRACE_S="15",
)

COMPLETION = {"model": "ziggurat-demo", "messages": [{"role": "user", "content": QUESTION}], "stream": True}


def _open_chats(stack: ExitStack, process: Process, account: Account, count: int) -> list[Iterator[Frame]]:
    """`count` chat streams, each read up to its fifth delta (so each answer is well under way)."""
    opened = []
    for _ in range(count):
        client, conversation_id = _start_chat(process.url, account)
        stack.callback(client.close)
        response = stack.enter_context(
            client.stream(
                "POST", f"/api/conversations/{conversation_id}/messages", json={"content": QUESTION}
            )
        )
        assert response.status_code == 200
        frames = sse_frames(response.iter_lines())
        assert next(frames).event == "message"
        opened.append(frames)
    return opened


def _finish_chat(frames: Iterator[Frame], before: list[str]) -> None:
    after, _, done = _read_deltas(frames, None)
    assert done is not None, "the stream ended without its reply"
    assert "".join(before + after) == EXPECTED  # nothing repeated, nothing missing
    assert (done["status"], done["content"]) == ("complete", EXPECTED)


def _wait_draining(process: Process) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready = httpx.get(process.url + "/readyz", timeout=2)
        if ready.status_code == 503 and ready.json() == {"status": "draining"}:
            return
        time.sleep(0.05)
    raise AssertionError("the process never reported draining")


def _exit_status(process: Process, timeout_s: float) -> int:
    return process.popen.wait(timeout=timeout_s)


def test_a_stopping_gateway_finishes_the_streams_it_has_open(topology: Cluster) -> None:
    topology.start("worker")
    gateway = topology.start("api")
    account = register(gateway.url, "dora@example.com")
    with ExitStack() as stack:
        chats = _open_chats(stack, gateway, account, 2)
        api = stack.enter_context(httpx.Client(base_url=gateway.url, headers=account.key_headers, timeout=60))
        completion = stack.enter_context(api.stream("POST", "/v1/chat/completions", json=COMPLETION))
        completion_lines = completion.iter_lines()
        assert completion.status_code == 200 and next(completion_lines).startswith("data: ")
        before = [_read_deltas(frames, 5)[0] for frames in chats]

        gateway.popen.send_signal(signal.SIGTERM)
        _wait_draining(gateway)
        refused = api.post("/v1/chat/completions", json={**COMPLETION, "stream": False})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "shutting_down"

        for frames, text in zip(chats, before, strict=True):
            _finish_chat(frames, text)
        chunks = [json.loads(line[6:]) for line in completion_lines if line.startswith("data: {")]
        assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == EXPECTED
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert _exit_status(gateway, 10) == 0
    assert "draining_started" in gateway.log()


def test_a_stopping_worker_hands_its_jobs_over_and_no_answer_is_cut(topology: Cluster) -> None:
    # Slow answers (about 20 s) on the stopping worker, so they are still running when it stops;
    # it releases them one second after the signal, so the test does not wait for them.
    stopping = topology.start(
        "worker", ZIGGURAT_HTTP__DRAIN_GRACE_S="1", ZIGGURAT_ENGINE__DEMO_INTER_TOKEN_S="0.2"
    )
    gateway = topology.start("api")
    account = register(gateway.url, "eve@example.com")
    with ExitStack() as stack:
        chats = _open_chats(stack, gateway, account, 3)
        before = [_read_deltas(frames, 5)[0] for frames in chats]
        successor = topology.start("worker")  # ready before the stop

        stopping.popen.send_signal(signal.SIGTERM)
        for frames, text in zip(chats, before, strict=True):
            _finish_chat(frames, text)
    assert _exit_status(stopping, 10) == 0
    assert "worker_releasing_jobs" in stopping.log()  # the grace period ran out mid-answer
    assert successor.log().count('"job_resumed"') == 3  # and each answer went on where it stopped


def test_a_stopping_worker_with_time_to_spare_finishes_its_own_jobs(topology: Cluster) -> None:
    stopping = topology.start("worker")
    gateway = topology.start("api")
    account = register(gateway.url, "fay@example.com")
    with ExitStack() as stack:
        chats = _open_chats(stack, gateway, account, 2)
        before = [_read_deltas(frames, 5)[0] for frames in chats]

        stopping.popen.send_signal(signal.SIGTERM)
        _wait_draining(stopping)  # a worker, too, leaves its load balancer's (or scaler's) view at once
        for frames, text in zip(chats, before, strict=True):
            _finish_chat(frames, text)
    assert _exit_status(stopping, 10) == 0
    assert "worker_releasing_jobs" not in stopping.log()
