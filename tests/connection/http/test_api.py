"""The app API under /api, in-process through ASGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from sqlalchemy import func, select

from tests.connection.http.conftest import register
from tests.server import RunningServer
from tests.sse import sse_frames
from ziggurat.app import build_app
from ziggurat.application.conversations.models import Message
from ziggurat.application.store.database import Database
from ziggurat.config import EngineSettings, Settings

PASSWORD = "correct horse battery"
Event = tuple[str, Any]


@pytest.fixture
async def client(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    engine = EngineSettings(kind="demo", demo_inter_token_s=0, demo_time_to_first_token_s=0)
    settings = Settings(
        data_dir=tmp_path, cache_dir=tmp_path / "cache", engine=engine, database_url=database_url
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def sign_up(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


def parse_sse(body: str) -> list[Event]:
    events: list[Event] = []
    for frame in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return events


async def start_conversation(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/conversations", json={"title": "Test"}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def post_message(
    client: httpx.AsyncClient, headers: dict[str, str], conversation_id: str, content: str, **extra: str
) -> httpx.Response:
    return await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"content": content, "max_tokens": 8},
        headers={**headers, **extra},
    )


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    registered = await client.post(
        "/api/auth/register", json={"email": "A@Example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201
    assert registered.json()["user"]["email"] == "a@example.com"
    assert registered.json()["user"]["role"] == "admin"
    assert "password_hash" not in registered.text

    login = await client.post("/api/auth/login", json={"email": "a@example.com", "password": PASSWORD})
    assert login.status_code == 200
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == "a@example.com"

    wrong = await client.post("/api/auth/login", json={"email": "a@example.com", "password": "nope nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"


async def test_refresh_rotates_and_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    registered = await client.post(
        "/api/auth/register", json={"email": "r@example.com", "password": PASSWORD}
    )
    refresh_token = registered.json()["tokens"]["refresh_token"]

    rotated = await client.post("/api/auth/refresh", json={"refresh_token": refresh_token})
    assert rotated.status_code == 200
    reused = await client.post("/api/auth/refresh", json={"refresh_token": refresh_token})
    assert reused.status_code == 401 and "already used" in reused.json()["error"]["message"]
    family_gone = await client.post(
        "/api/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert family_gone.status_code == 401

    fresh = await client.post("/api/auth/login", json={"email": "r@example.com", "password": PASSWORD})
    assert (await client.post("/api/auth/logout", json=fresh.json())).status_code == 400
    logout = await client.post("/api/auth/logout", json={"refresh_token": fresh.json()["refresh_token"]})
    assert logout.status_code == 204
    after = await client.post("/api/auth/refresh", json={"refresh_token": fresh.json()["refresh_token"]})
    assert after.status_code == 401


def _forged_token(user_id: str, *, key: str | None, algorithm: str) -> str:
    now = datetime.now(UTC)
    claims = {"sub": user_id, "role": "admin", "scopes": ["chat", "admin"], "iat": now,
              "exp": now + timedelta(minutes=5), "jti": "x", "typ": "access"}  # fmt: skip
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.parametrize(("key", "algorithm"), [("not-the-server-key-" + "x" * 40, "HS256"), (None, "none")])
async def test_forged_jwts_get_401(client: httpx.AsyncClient, key: str | None, algorithm: str) -> None:
    headers = await sign_up(client, "victim@example.com")
    user_id = (await client.get("/api/auth/me", headers=headers)).json()["id"]

    forged = {"Authorization": f"Bearer {_forged_token(user_id, key=key, algorithm=algorithm)}"}
    response = await client.get("/api/conversations", headers=forged)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer nonsense"])
async def test_missing_or_malformed_credentials_get_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await client.get("/api/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"]


async def test_api_keys_work_until_revoked(client: httpx.AsyncClient) -> None:
    headers = await sign_up(client, "k@example.com")
    created = await client.post("/api/keys", json={"name": "script"}, headers=headers)
    assert created.status_code == 201
    key = created.json()
    key_headers = {"Authorization": f"Bearer {key['key']}"}

    listed = await client.get("/api/keys", headers=headers)
    assert [item["id"] for item in listed.json()["data"]] == [key["id"]]
    assert key["key"] not in listed.text
    assert (await client.get("/api/conversations", headers=key_headers)).status_code == 200
    assert (await client.post("/api/keys", json={"name": "x"}, headers=key_headers)).status_code == 403

    assert (await client.delete(f"/api/keys/{key['id']}", headers=headers)).status_code == 204
    revoked = await client.get("/api/conversations", headers=key_headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


async def test_posting_a_message_streams_message_deltas_done(client: httpx.AsyncClient) -> None:
    headers = await sign_up(client, "chat@example.com")
    conversation_id = await start_conversation(client, headers)

    response = await post_message(client, headers, conversation_id, "Tell me about ziggurats")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    started, done = events[0][1], events[-1][1]
    assert started["user_message"]["content"] == "Tell me about ziggurats"
    assert started["replayed"] is False
    text = "".join(data["content"] for name, data in events if name == "delta")
    assert done["id"] == started["assistant_message_id"] and done["content"] == text
    assert done["status"] == "complete" and done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 8

    detail = (await client.get(f"/api/conversations/{conversation_id}", headers=headers)).json()
    assert [(m["role"], m["status"]) for m in detail["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]


async def test_a_retried_idempotency_key_stores_once_and_replays(
    client: httpx.AsyncClient, database_url: str
) -> None:
    headers = await sign_up(client, "retry@example.com")
    conversation_id = await start_conversation(client, headers)

    first = await post_message(client, headers, conversation_id, "hello", **{"Idempotency-Key": "abc"})
    second = await post_message(client, headers, conversation_id, "hello", **{"Idempotency-Key": "abc"})
    first_events, second_events = parse_sse(first.text), parse_sse(second.text)
    assert second_events[0][1]["replayed"] is True
    assert second_events[0][1]["user_message"] == first_events[0][1]["user_message"]
    assert second_events[-1] == first_events[-1]
    assert "".join(d["content"] for n, d in second_events if n == "delta") == first_events[-1][1]["content"]

    database = Database(database_url)
    try:
        async with database.session() as session:
            count = await session.scalar(
                select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
            )
    finally:
        await database.aclose()
    assert count == 2


async def test_users_cannot_read_list_or_post_to_each_others_conversations(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice@example.com")
    bob = await sign_up(client, "bob@example.com")
    conversation_id = await start_conversation(client, alice)

    read = await client.get(f"/api/conversations/{conversation_id}", headers=bob)
    assert read.status_code == 404 and read.json()["error"]["type"] == "not_found_error"
    post = await post_message(client, bob, conversation_id, "let me in")
    assert post.status_code == 404
    assert (await client.get("/api/conversations", headers=bob)).json() == {"data": [], "next_cursor": None}
    missing = await client.get("/api/conversations/does-not-exist", headers=alice)
    assert (
        missing.status_code == 404 and missing.json()["error"]["message"] == read.json()["error"]["message"]
    )


async def test_listing_is_paginated(client: httpx.AsyncClient) -> None:
    headers = await sign_up(client, "p@example.com")
    ids = [await start_conversation(client, headers) for _ in range(3)]

    first = (await client.get("/api/conversations", params={"limit": 2}, headers=headers)).json()
    second = (
        await client.get(
            "/api/conversations", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert [c["id"] for c in first["data"] + second["data"]] == list(reversed(ids))
    assert second["next_cursor"] is None
    too_many = await client.get("/api/conversations", params={"limit": 101}, headers=headers)
    assert too_many.status_code == 400


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        ({"content": ""}, {}),
        ({"content": "x" * 32_001}, {}),
        ({"content": "hi", "temperature": 5}, {}),
        ({"content": "hi", "unknown": 1}, {}),
        ({"content": "hi"}, {"Idempotency-Key": "k" * 201}),
    ],
)
async def test_bad_messages_get_400(
    client: httpx.AsyncClient, body: dict[str, Any], extra: dict[str, str]
) -> None:
    headers = await sign_up(client, "v@example.com")
    conversation_id = await start_conversation(client, headers)
    response = await client.post(
        f"/api/conversations/{conversation_id}/messages", json=body, headers={**headers, **extra}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_drops_mid_stream_resumes_with_last_event_id(slow_demo_server: RunningServer) -> None:
    server = slow_demo_server
    account = register(server.base_url, "leaver@example.com")
    with httpx.Client(base_url=server.base_url, headers=account.jwt_headers, timeout=30) as client:
        conversation_id = client.post("/api/conversations", json={}).json()["id"]
        url = f"/api/conversations/{conversation_id}/messages"
        received: list[str] = []
        last_id = None
        with client.stream("POST", url, json={"content": "a long story please"}) as response:
            assert response.status_code == 200
            for frame in sse_frames(response.iter_lines()):
                if frame.event == "message":
                    reply_id = json.loads(frame.data)["assistant_message_id"]
                if frame.event == "delta":
                    received.append(json.loads(frame.data)["content"])
                    last_id = frame.id
                    if len(received) == 2:
                        break
        assert last_id is not None
        # The reply goes on without the client; it picks up after the last event it saw.
        resume = f"/api/messages/{reply_id}/stream"
        with client.stream("GET", resume, headers={"Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            frames = list(sse_frames(response.iter_lines()))
        rest = [json.loads(f.data)["content"] for f in frames if f.event == "delta"]
        done = json.loads(frames[-1].data)
        assert frames[-1].event == "done" and done["status"] == "complete"
        assert "".join(received + rest) == done["content"]
        assert client.get(resume, headers={"Last-Event-ID": "not-an-id"}).status_code == 400
        stranger = register(server.base_url, "stranger@example.com")
        assert client.get(resume, headers=stranger.jwt_headers).status_code == 404
    assert server.services.engines[0].cancelled_count == 0  # type: ignore[attr-defined]
