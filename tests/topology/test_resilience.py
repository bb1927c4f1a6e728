"""Real servers restarted under traffic, priorities across processes, and the shared response cache.

The Redis and RabbitMQ restarts stop and start this machine's real servers
(the commands this machine's services are started with), so these tests run
one at a time and put the servers back even when they fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from tests.connection.http.conftest import Account, register
from tests.sse import sse_frames
from tests.topology.cluster import EXPECTED, QUESTION, Cluster
from tests.topology.conftest import topology_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow]

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


topology = topology_fixture(
    ZIGGURAT_ENGINE__DEMO_INTER_TOKEN_S="0.05",
    ZIGGURAT_ENGINE__MAX_CONCURRENCY="1",
    ZIGGURAT_BROKER__STREAM_IDLE_TIMEOUT_S="5",
    ZIGGURAT_BROKER__FIRST_EVENT_TIMEOUT_S="20",
)


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is needed to restart the real server in this test")


def _redis_up(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=1).ping():
                return
        except redis.RedisError:
            time.sleep(0.2)
    raise TimeoutError("Redis did not come back")


def _chat(client: httpx.Client, conversation_id: str, content: str) -> tuple[str, str, dict[str, object]]:
    """Post a message and read the stream to its end: (text, final event, its body)."""
    texts: list[str] = []
    with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages", json={"content": content}
    ) as response:
        assert response.status_code == 200, response.read()
        for frame in sse_frames(response.iter_lines()):
            if frame.event == "delta":
                texts.append(json.loads(frame.data)["content"])
            elif frame.event in ("done", "error"):
                return "".join(texts), frame.event, json.loads(frame.data)
    raise AssertionError("the stream ended without done or error")


def _account(gateway_url: str, email: str) -> tuple[httpx.Client, Account, str]:
    account = register(gateway_url, email)
    client = httpx.Client(base_url=gateway_url, headers=account.jwt_headers, timeout=90)
    conversation_id = client.post("/api/conversations", json={}).json()["id"]
    return client, account, conversation_id


def _final_status(client: httpx.Client, conversation_id: str, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        reply = client.get(f"/api/conversations/{conversation_id}").json()["messages"][-1]
        if reply["status"] != "streaming" or time.monotonic() > deadline:
            return dict(reply)
        time.sleep(0.2)


def _outage_mid_stream(topology: Cluster, email: str, restart: Callable[[], None]) -> None:
    """Restart a server mid-answer: the stream completes whole or ends with a clear error, never
    hangs; the reply is stored with a final status; new requests succeed once the server is back."""
    topology.start("worker")
    gateway = topology.start("api")
    client, _, conversation_id = _account(gateway.url, email)
    outcome: dict[str, object] = {}

    def chat() -> None:
        outcome["result"] = _chat(client, conversation_id, QUESTION)

    reader = threading.Thread(target=chat)
    reader.start()
    time.sleep(1.0)  # mid-answer
    restart()
    reader.join(timeout=90)
    assert not reader.is_alive(), "the stream hung"
    text, final, body = outcome["result"]  # type: ignore[misc]
    if final == "done":  # it recovered: then it is whole
        assert text == EXPECTED == body["content"]  # type: ignore[index]
    else:  # or it ended with a clear error, and the partial answer is stored with a visible status
        assert body["error"]["message"]  # type: ignore[index]
    assert _final_status(client, conversation_id)["status"] in ("complete", "error", "cancelled")
    deadline = time.monotonic() + 45
    while True:
        text, final, body = _chat(client, conversation_id, "And after the restart?")
        if final == "done" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert final == "done" and body["status"] == "complete" and text
    client.close()


def test_a_redis_restart_mid_stream_ends_cleanly_and_service_resumes(
    topology: Cluster, redis_server_url: str
) -> None:
    _require("redis-server")

    def restart() -> None:
        try:
            subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], timeout=10, check=False)
            time.sleep(1.0)
        finally:
            subprocess.run(REDIS_START, timeout=10, check=True)
            _redis_up(redis_server_url)

    _outage_mid_stream(topology, "carol@example.com", restart)


def test_a_rabbitmq_restart_mid_stream_never_hangs(topology: Cluster) -> None:
    _require("rabbitmqctl")

    def restart() -> None:
        try:
            subprocess.run(["rabbitmqctl", "stop_app"], timeout=60, check=True, capture_output=True)
        finally:
            subprocess.run(["rabbitmqctl", "start_app"], timeout=60, check=True, capture_output=True)

    _outage_mid_stream(topology, "dave@example.com", restart)


def test_interactive_chat_overtakes_queued_api_jobs(topology: Cluster) -> None:
    topology.start("worker")  # one slot
    gateway = topology.start("api")
    client, account, conversation_id = _account(gateway.url, "erin@example.com")
    finished: list[str] = []
    lock = threading.Lock()

    def api_job(name: str) -> None:
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "ziggurat-demo", "messages": [{"role": "user", "content": name}], "max_tokens": 8},
            headers=account.key_headers,
            timeout=90,
        )
        assert response.status_code == 200
        with lock:
            finished.append(name)

    threads = [threading.Thread(target=api_job, args=(f"api-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    time.sleep(0.3)  # one runs, three wait in the queue
    _chat(client, conversation_id, "interactive please")
    with lock:
        finished.append("chat")
    for thread in threads:
        thread.join(timeout=90)
    # The chat went ahead of at least two of the queued API jobs (it waited for the running one only).
    assert finished.index("chat") <= 2, finished
    client.close()


def test_a_deterministic_request_is_a_cache_hit_through_another_gateway(topology: Cluster) -> None:
    topology.start("worker")
    first, second = topology.start("api"), topology.start("api")
    account = register(first.url, "frank@example.com")
    body = {"model": "ziggurat-demo", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}
    one = httpx.post(first.url + "/v1/chat/completions", json=body, headers=account.key_headers, timeout=60)
    two = httpx.post(second.url + "/v1/chat/completions", json=body, headers=account.key_headers, timeout=60)
    assert (one.headers["x-ziggurat-cache"], two.headers["x-ziggurat-cache"]) == ("miss", "hit")
    assert one.json()["choices"][0]["message"] == two.json()["choices"][0]["message"]
    sampled = {**body, "temperature": 0.8}
    three = httpx.post(
        second.url + "/v1/chat/completions", json=sampled, headers=account.key_headers, timeout=60
    )
    assert three.headers["x-ziggurat-cache"] == "bypass"
    metrics = httpx.get(second.url + "/metrics").text
    assert 'ziggurat_cache_lookups_total{cache="response",match="exact",result="hit"} 1.0' in metrics
