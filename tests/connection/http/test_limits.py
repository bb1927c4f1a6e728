"""Rate limits and quotas over HTTP: 429s with Retry-After and OpenAI's `x-ratelimit-*` headers.

In-process apps for the request counting; a real server for concurrent
streams and the openai SDK; two gateways sharing Redis for exactness across
replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as redis

from tests.connection.http.conftest import demo_settings, register
from tests.connection.http.inprocess import (
    MODEL,
    Session,
    app_client,
    app_settings,
    assert_error,
    cheap_passwords,
    sign_up,
)
from tests.server import RunningServer, running_server, wait_until
from ziggurat.app import build_app
from ziggurat.config import LimitSettings

RATE_HEADERS = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
}
TOKEN_HEADERS = {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


class Client:
    """An in-process app as an httpx client, with sign-up and API key helpers."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def sign_up(self, email: str) -> Session:
        return await sign_up(self.http, email)

    async def api_key(self, session: Session) -> dict[str, str]:
        created = await self.http.post("/api/keys", json={"name": "k"}, headers=session.headers)
        assert created.status_code == 201, created.text
        return {"Authorization": f"Bearer {created.json()['key']}"}

    async def chat(self, headers: dict[str, str], **body: Any) -> httpx.Response:
        return await self.http.post("/v1/chat/completions", json={**BODY, **body}, headers=headers)


@pytest.fixture
def limits() -> dict[str, Any]:
    return {}


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: dict[str, Any]
) -> AsyncIterator[Client]:
    cheap_passwords(monkeypatch)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'ziggurat.db'}"
    settings = app_settings(tmp_path, database_url, limits=limits, conversations={"auto_title": False})
    async with app_client(build_app(settings)) as http:
        yield Client(http)


@pytest.mark.parametrize("limits", [{"requests_per_minute": 2, "tokens_per_minute": 100_000}])
async def test_answers_carry_the_headers_and_the_refusal_says_when_to_retry(client: Client) -> None:
    alice = await client.sign_up("alice@example.com")
    plain = await client.chat(alice.headers)
    assert plain.status_code == 200, plain.text
    assert RATE_HEADERS | TOKEN_HEADERS <= set(plain.headers)
    assert plain.headers["x-ratelimit-limit-requests"] == "2"
    assert plain.headers["x-ratelimit-remaining-requests"] == "1"
    assert plain.headers["x-ratelimit-limit-tokens"] == "100000"

    streamed = await client.chat(alice.headers, stream=True)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
    reset = streamed.headers["x-ratelimit-reset-requests"]
    assert reset == "1m0s" or reset.startswith("59.")  # a minute, less the milliseconds since

    refused = await client.chat(alice.headers)
    error = assert_error(refused, 429, "rate_limit_error")
    assert error["code"] == "rate_limit_exceeded" and "2 requests per minute" in str(error["message"])
    assert 29 <= int(refused.headers["retry-after"]) <= 30
    assert 29_000 <= int(refused.headers["retry-after-ms"]) <= 30_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert RATE_HEADERS | TOKEN_HEADERS <= set(refused.headers)


@pytest.mark.parametrize("limits", [{"api_key_requests_per_minute": 1}])
async def test_each_api_key_is_limited_apart_from_its_user(client: Client) -> None:
    alice = await client.sign_up("alice@example.com")
    first_key, second_key = await client.api_key(alice), await client.api_key(alice)

    assert (await client.chat(first_key)).headers["x-ratelimit-remaining-requests"] == "0"
    assert_error(await client.chat(first_key), 429, "rate_limit_error")
    assert (await client.chat(second_key)).status_code == 200
    signed_in = await client.chat(alice.headers)  # the user has no limit of its own
    assert signed_in.status_code == 200 and not RATE_HEADERS & set(signed_in.headers)


async def test_admins_set_a_roles_limits_and_its_users_meet_them_at_once(client: Client) -> None:
    admin = await client.sign_up("root@example.com")
    alice = await client.sign_up("alice@example.com")
    fields = {"requests_per_minute": 1, "tokens_per_minute": 5000, "max_concurrent_streams": 3}
    created = await client.http.post(
        "/api/admin/roles", json={"name": "metered", "monthly_tokens": 10**6, **fields}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    role = (await client.http.get("/api/admin/roles/metered", headers=admin.headers)).json()
    assert {name: role[name] for name in [*fields, "monthly_tokens", "daily_tokens"]} == {
        **fields,
        "monthly_tokens": 10**6,
        "daily_tokens": None,
    }
    changed = await client.http.patch(
        f"/api/admin/users/{alice.user_id}", json={"role": "metered"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text

    assert (await client.chat(alice.headers)).status_code == 200
    assert_error(await client.chat(alice.headers), 429, "rate_limit_error")

    patched = await client.http.patch(
        "/api/admin/roles/metered", json={"requests_per_minute": None}, headers=admin.headers
    )
    assert patched.status_code == 200 and patched.json()["requests_per_minute"] is None
    assert patched.json()["tokens_per_minute"] == 5000
    assert (await client.chat(alice.headers)).status_code == 200
    rejected = await client.http.post(
        "/api/admin/roles", json={"name": "bad", "max_concurrent_streams": -1}, headers=admin.headers
    )
    assert assert_error(rejected, 400)["param"] == "max_concurrent_streams"


async def test_a_daily_quota_refuses_once_used_up_until_midnight_utc(client: Client) -> None:
    admin = await client.sign_up("root@example.com")
    alice = await client.sign_up("alice@example.com")
    await client.http.post(
        "/api/admin/roles", json={"name": "trial", "daily_tokens": 5}, headers=admin.headers
    )
    await client.http.patch(
        f"/api/admin/users/{alice.user_id}", json={"role": "trial"}, headers=admin.headers
    )

    first = await client.chat(alice.headers)  # admitted while some of the quota is left
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "5"
    refused = await client.chat(alice.headers)
    error = assert_error(refused, 429, "rate_limit_error")
    assert "Daily token quota of 5" in str(error["message"])
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400


@pytest.mark.parametrize("limits", [{"requests_per_minute": 1}])
async def test_a_refused_chat_message_is_not_stored(client: Client) -> None:
    alice = await client.sign_up("alice@example.com")
    created = await client.http.post("/api/conversations", json={}, headers=alice.headers)
    path = f"/api/conversations/{created.json()['id']}"
    first = await client.http.post(f"{path}/messages", json={"content": "one"}, headers=alice.headers)
    assert first.status_code == 200, first.text
    refused = await client.http.post(f"{path}/messages", json={"content": "two"}, headers=alice.headers)
    assert_error(refused, 429, "rate_limit_error")
    assert "retry-after" in refused.headers
    messages = (await client.http.get(path, headers=alice.headers)).json()["messages"]
    assert [message["content"] for message in messages if message["role"] == "user"] == ["one"]


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[RunningServer]:
    limits = LimitSettings(max_concurrent_streams=1, requests_per_minute=3)
    settings = demo_settings(tmp_path, demo_inter_token_s=0.05).model_copy(update={"limits": limits})
    with running_server(settings) as server:
        yield server


def test_the_openai_sdk_sees_a_rate_limit_error_with_the_headers(limited_server: RunningServer) -> None:
    account = register(limited_server.base_url, "alice@example.com")
    client = openai.OpenAI(base_url=f"{limited_server.base_url}/v1", api_key=account.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="ziggurat-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"

    stream = client.chat.completions.create(
        model="ziggurat-demo", messages=[{"role": "user", "content": "tell me a story"}], stream=True
    )
    next(iter(stream))  # the stream holds the user's only slot
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="ziggurat-demo", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "1"
    stream.close()

    def admitted() -> bool:
        try:
            client.chat.completions.create(
                model="ziggurat-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
        except openai.RateLimitError:
            return False
        return True

    assert wait_until(admitted, timeout_s=10)  # a stream that ended frees its slot


N = 4


@pytest.mark.redis
async def test_two_gateways_sharing_redis_admit_exactly_the_limit_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server_url: str, key_prefix: str
) -> None:
    cheap_passwords(monkeypatch)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

    def gateway(name: str) -> Any:
        return build_app(
            app_settings(
                tmp_path / name,
                database_url,
                redis_url=redis_server_url,
                broker={"redis_prefix": key_prefix},
                limits={"requests_per_minute": N},
                conversations={"auto_title": False},
            )
        )

    try:
        async with AsyncExitStack() as stack:
            first = Client(await stack.enter_async_context(app_client(gateway("a"))))
            second = Client(await stack.enter_async_context(app_client(gateway("b"))))
            alice = await first.sign_up("alice@example.com")
            key = await first.api_key(alice)
            responses = await asyncio.gather(
                *(gateway_client.chat(key) for gateway_client in [first, second] * N)
            )
    finally:
        await _delete_keys(redis_server_url, key_prefix)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * N + [429] * N
    for response in responses:
        assert response.headers["x-ratelimit-limit-requests"] == str(N)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def _delete_keys(url: str, prefix: str) -> None:
    client = redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
