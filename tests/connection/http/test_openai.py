"""The OpenAI-compatible API, driven by the official `openai` SDK against a real server."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from tests.connection.http.conftest import Account, register
from tests.server import RunningServer, wait_until

MESSAGES = [{"role": "user", "content": "Explain vector databases briefly"}]


def sdk(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_models_lists_the_demo_engine_as_demo(demo_server: RunningServer, alice: Account) -> None:
    models = sdk(demo_server, alice.api_key).models.list()
    [model] = models.data
    assert model.id == "ziggurat-demo"
    assert model.model_extra and model.model_extra["is_demo"] is True


def test_non_streaming_completion(demo_server: RunningServer, alice: Account) -> None:
    completion = sdk(demo_server, alice.api_key).chat.completions.create(
        model="ziggurat-demo",
        messages=MESSAGES,
        max_tokens=12,  # type: ignore[arg-type]
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and "ziggurat" in choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12


def test_streaming_completion_with_usage(demo_server: RunningServer, alice: Account) -> None:
    stream = sdk(demo_server, alice.api_key).chat.completions.create(
        model="ziggurat-demo",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        seed=1,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len([c for c in chunks if c.choices]) > 2  # tokens arrive coalesced, but progressively
    assert "demo engine" in text
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 10
    assert len({c.id for c in chunks}) == 1


def test_jwt_access_token_also_works_on_v1(demo_server: RunningServer, alice: Account) -> None:
    completion = sdk(demo_server, alice.access_token).chat.completions.create(
        model="ziggurat-demo",
        messages=MESSAGES,
        max_tokens=3,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content


def test_wrong_and_revoked_keys_get_401(demo_server: RunningServer, alice: Account) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(demo_server, "zk-not-a-real-key").models.list()
    revoked = httpx.delete(
        f"{demo_server.base_url}/api/keys/{alice.api_key_id}", headers=alice.jwt_headers, timeout=10
    )
    assert revoked.status_code == 204
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(demo_server, alice.api_key).chat.completions.create(model="ziggurat-demo", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 401
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "authentication_error"


def test_missing_authorization_gets_401(demo_server: RunningServer) -> None:
    response = httpx.post(f"{demo_server.base_url}/v1/chat/completions", json={}, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("content", "body", "status", "param"),
    [
        ("application/json", b'{"model": "ziggurat-demo", "messages": [', 400, None),
        ("application/json", b'{"model": "ziggurat-demo"}', 400, "messages"),
        (
            "application/json",
            b'{"model": "ziggurat-demo", "messages": [{"role": "user", "content": ""}]}',
            400,
            None,
        ),
        (
            "application/json",
            b'{"model": "ziggurat-demo", "max_tokens": -5, "messages": [{"role": "user", "content": "hi"}]}',
            400,
            "max_tokens",
        ),
        (
            "application/json",
            b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}',
            404,
            "model",
        ),
        ("application/json", b"[1, 2, 3]", 400, None),
        ("text/plain", b"hello", 400, None),
    ],
)
def test_bad_input_gets_openai_shaped_4xx(
    demo_server: RunningServer, alice: Account, content: str, body: bytes, status: int, param: str | None
) -> None:
    response = httpx.post(
        f"{demo_server.base_url}/v1/chat/completions",
        content=body,
        headers={**alice.key_headers, "Content-Type": content},
        timeout=10,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] == param


def test_oversized_body_gets_413(demo_server: RunningServer, alice: Account) -> None:
    huge = "x" * (2 * 1024 * 1024)
    response = httpx.post(
        f"{demo_server.base_url}/v1/chat/completions",
        json={"model": "ziggurat-demo", "messages": [{"role": "user", "content": huge}]},
        headers=alice.key_headers,
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_client_disconnect_cancels_the_job_and_frees_the_slot(slow_demo_server: RunningServer) -> None:
    server = slow_demo_server
    account = register(server.base_url, "bob@example.com")
    engine = server.services.engines[0]
    payload = (
        b'{"model": "ziggurat-demo", "stream": true, "messages": [{"role": "user", "content": "long story"}]}'
    )
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {account.api_key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        first = raw.recv(4096)
        assert b"200 OK" in first
        assert wait_until(lambda: engine.active_count == 1)  # type: ignore[attr-defined]
    assert wait_until(lambda: engine.cancelled_count == 1)  # type: ignore[attr-defined]
    assert engine.cancelled_count == 1  # type: ignore[attr-defined]
    assert engine.active_count == 0  # type: ignore[attr-defined]
    # The only slot is free again: a new request is served to the end.
    completion = sdk(server, account.api_key).chat.completions.create(
        model="ziggurat-demo",
        messages=MESSAGES,
        max_tokens=3,  # type: ignore[arg-type]
    )
    assert completion.choices[0].finish_reason == "length"


def test_metrics_and_probes(demo_server: RunningServer, alice: Account) -> None:
    sdk(demo_server, alice.api_key).chat.completions.create(
        model="ziggurat-demo",
        messages=MESSAGES,
        max_tokens=3,
        stream=True,  # type: ignore[arg-type]
    ).close()
    list(
        sdk(demo_server, alice.api_key).chat.completions.create(
            model="ziggurat-demo",
            messages=MESSAGES,
            max_tokens=5,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert httpx.get(demo_server.base_url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(demo_server.base_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "broker": True,
        "streams": True,
        "database": True,
        "engine": True,
    }
    metrics = httpx.get(demo_server.base_url + "/metrics").text
    assert 'ziggurat_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in metrics
    assert 'ziggurat_time_to_first_token_seconds_count{model="ziggurat-demo"}' in metrics
    assert 'ziggurat_inter_token_latency_seconds_count{model="ziggurat-demo"}' in metrics
    assert 'ziggurat_queue_depth{model="ziggurat-demo"} 0.0' in metrics
    assert "ziggurat_active_streams" in metrics


def test_request_id_is_echoed(demo_server: RunningServer) -> None:
    response = httpx.get(demo_server.base_url + "/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = httpx.get(demo_server.base_url + "/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert generated.headers["x-request-id"] != "bad id\twith tab"


def test_a_deterministic_request_is_answered_from_the_cache_the_second_time(
    demo_server: RunningServer, alice: Account
) -> None:
    body = {"model": "ziggurat-demo", "messages": MESSAGES, "temperature": 0, "max_tokens": 12}
    headers = alice.key_headers
    url = demo_server.base_url + "/v1/chat/completions"
    first = httpx.post(url, json=body, headers=headers, timeout=30)
    second = httpx.post(url, json=body, headers=headers, timeout=30)
    assert (first.headers["x-ziggurat-cache"], second.headers["x-ziggurat-cache"]) == ("miss", "hit")
    assert second.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert second.json()["usage"] == first.json()["usage"]
    streamed = httpx.post(url, json={**body, "stream": True}, headers=headers, timeout=30)
    assert streamed.headers["x-ziggurat-cache"] == "hit"
    assert first.json()["choices"][0]["message"]["content"] in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in streamed.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    sampled = {**body, "temperature": 0.7}
    for _ in range(2):
        assert (
            httpx.post(url, json=sampled, headers=headers, timeout=30).headers["x-ziggurat-cache"] == "bypass"
        )
    metrics = httpx.get(demo_server.base_url + "/metrics").text
    assert 'ziggurat_cache_lookups_total{cache="response",match="exact",result="hit"} 2.0' in metrics
    assert 'ziggurat_cache_lookups_total{cache="response",match="",result="miss"} 1.0' in metrics


def test_cached_answers_are_not_shared_between_users(demo_server: RunningServer, alice: Account) -> None:
    bob = register(demo_server.base_url, "bob@example.com")
    body = {"model": "ziggurat-demo", "messages": MESSAGES, "seed": 7, "max_tokens": 8}
    url = demo_server.base_url + "/v1/chat/completions"
    assert (
        httpx.post(url, json=body, headers=alice.key_headers, timeout=30).headers["x-ziggurat-cache"]
        == "miss"
    )
    assert (
        httpx.post(url, json=body, headers=bob.key_headers, timeout=30).headers["x-ziggurat-cache"] == "miss"
    )
