"""Conversation routes: list/search/change/delete, branches over SSE, stop, ownership and bad input."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.connection.http.conftest import register
from tests.connection.http.inprocess import (
    Session,
    assert_error,
    sign_up,
)
from tests.server import RunningServer

Event = tuple[str, Any]


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Session:
    return await sign_up(client, "alice@example.com")


@pytest.fixture
async def bob(client: httpx.AsyncClient, alice: Session) -> Session:
    return await sign_up(client, "bob@example.com")


def parse_sse(body: str) -> list[Event]:
    events: list[Event] = []
    for frame in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return events


async def _new(client: httpx.AsyncClient, session: Session, **body: object) -> str:
    response = await client.post("/api/conversations", json=body, headers=session.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _chat(client: httpx.AsyncClient, session: Session, path: str, **body: object) -> list[Event]:
    response = await client.post(path, json={"max_tokens": 6, **body}, headers=session.headers)
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[0][0] == "message" and events[-1][0] == "done"
    return events


async def test_list_pin_archive_rename_and_delete(client: httpx.AsyncClient, alice: Session) -> None:
    first, second, third = [await _new(client, alice, title=f"c{i}") for i in range(3)]
    pinned = await client.patch(
        f"/api/conversations/{first}", json={"pinned": True, "title": "Pinned"}, headers=alice.headers
    )
    assert pinned.status_code == 200 and pinned.json()["pinned"] and pinned.json()["title"] == "Pinned"
    await client.patch(f"/api/conversations/{second}", json={"archived": True}, headers=alice.headers)

    listed = (await client.get("/api/conversations", headers=alice.headers)).json()
    assert [c["id"] for c in listed["data"]] == [first, third]
    archived = (
        await client.get("/api/conversations", params={"archived": "true"}, headers=alice.headers)
    ).json()
    assert [c["id"] for c in archived["data"]] == [second]

    assert (await client.delete(f"/api/conversations/{third}", headers=alice.headers)).status_code == 204
    assert_error(
        await client.get(f"/api/conversations/{third}", headers=alice.headers), 404, "not_found_error"
    )
    assert [
        c["id"] for c in (await client.get("/api/conversations", headers=alice.headers)).json()["data"]
    ] == [first]


async def test_branches_over_sse_edit_regenerate_select(client: httpx.AsyncClient, alice: Session) -> None:
    conversation = await _new(client, alice)
    messages = f"/api/conversations/{conversation}/messages"
    first = await _chat(client, alice, messages, content="Tell me about ziggurats")
    started = first[0][1]
    assert started["context"] == {
        "truncated": False,
        "dropped_messages": 0,
        "prompt_tokens": started["context"]["prompt_tokens"],
    }
    assert started["context"]["prompt_tokens"] > 0
    user_id, reply_id = started["user_message"]["id"], started["assistant_message_id"]

    edited = await _chat(client, alice, f"{messages}/{user_id}/edit", content="Tell me about pyramids")
    assert edited[0][1]["user_message"]["parent_id"] is None
    regenerated = await _chat(client, alice, f"{messages}/{edited[-1][1]['id']}/regenerate", temperature=0.5)
    assert regenerated[-1][1]["status"] == "complete"

    detail = (await client.get(f"/api/conversations/{conversation}", headers=alice.headers)).json()
    assert [m["content"] for m in detail["messages"]][:1] == ["Tell me about pyramids"]
    assert [(m["sibling_index"], m["sibling_count"]) for m in detail["messages"]] == [(1, 2), (1, 2)]

    switched = await client.post(f"{messages}/{reply_id}/select", headers=alice.headers)
    assert switched.status_code == 200
    assert [m["id"] for m in switched.json()["messages"]] == [user_id, reply_id]
    no_body = await client.post(f"{messages}/{reply_id}/regenerate", headers=alice.headers)
    assert no_body.status_code == 200 and parse_sse(no_body.text)[-1][0] == "done"


async def test_search_and_stop_a_finished_reply(client: httpx.AsyncClient, alice: Session) -> None:
    conversation = await _new(client, alice, title="Ziggurat notes")
    events = await _chat(
        client, alice, f"/api/conversations/{conversation}/messages", content="mudbrick terraces"
    )
    found = await client.get("/api/conversations/search", params={"q": "mudbrick"}, headers=alice.headers)
    assert found.status_code == 200
    hit = found.json()["data"][0]
    assert (
        hit["conversation"]["id"] == conversation and hit["role"] == "user" and "mudbrick" in hit["snippet"]
    )
    by_title = (
        await client.get("/api/conversations/search", params={"q": "notes"}, headers=alice.headers)
    ).json()
    assert by_title["data"][0]["message_id"] is None

    reply_id = events[0][1]["assistant_message_id"]
    stopped = await client.post(
        f"/api/conversations/{conversation}/messages/{reply_id}/stop", headers=alice.headers
    )
    assert stopped.status_code == 200 and stopped.json()["status"] == "complete"


async def test_another_users_conversation_is_404_everywhere(
    client: httpx.AsyncClient, alice: Session, bob: Session
) -> None:
    conversation = await _new(client, alice, title="secret")
    events = await _chat(
        client, alice, f"/api/conversations/{conversation}/messages", content="private words"
    )
    user_id, reply_id = events[0][1]["user_message"]["id"], events[0][1]["assistant_message_id"]
    base = f"/api/conversations/{conversation}"
    attempts = [
        client.get(base, headers=bob.headers),
        client.patch(base, json={"title": "mine"}, headers=bob.headers),
        client.delete(base, headers=bob.headers),
        client.post(f"{base}/messages", json={"content": "hi"}, headers=bob.headers),
        client.post(f"{base}/messages/{user_id}/edit", json={"content": "hi"}, headers=bob.headers),
        client.post(f"{base}/messages/{reply_id}/regenerate", headers=bob.headers),
        client.post(f"{base}/messages/{reply_id}/select", headers=bob.headers),
        client.post(f"{base}/messages/{reply_id}/stop", headers=bob.headers),
    ]
    for attempt in attempts:
        assert_error(await attempt, 404, "not_found_error")
    search = await client.get("/api/conversations/search", params={"q": "private"}, headers=bob.headers)
    assert search.json() == {"data": []}
    assert (await client.get(base, headers=alice.headers)).json()["title"] == "secret"


ONE = "/api/conversations/{conversation}"


@pytest.mark.parametrize(
    ("method", "url", "body", "params"),
    [
        ("patch", ONE, {"title": "x" * 201}, None),
        ("patch", ONE, {"colour": "red"}, None),
        ("patch", ONE, {"pinned": "sometimes"}, None),
        ("post", ONE + "/messages/{question}/edit", {"content": " "}, None),
        ("post", ONE + "/messages/{answer}/edit", {"content": "edit an answer?"}, None),
        ("post", ONE + "/messages/{answer}/regenerate", {"temperature": 5}, None),
        ("post", ONE + "/messages/{question}/regenerate", None, None),
        ("post", ONE + "/messages/{question}/stop", None, None),
        ("get", "/api/conversations/search", None, {"q": ""}),
        ("get", "/api/conversations/search", None, {"q": "x", "limit": 0}),
        ("get", "/api/conversations", None, {"archived": "perhaps"}),
        ("get", "/api/conversations", None, {"cursor": "garbage"}),
    ],
)
async def test_bad_input_gets_a_4xx_json_error(
    client: httpx.AsyncClient,
    alice: Session,
    method: str,
    url: str,
    body: dict[str, object] | None,
    params: dict[str, object] | None,
) -> None:
    conversation = await _new(client, alice)
    started = (await _chat(client, alice, f"/api/conversations/{conversation}/messages", content="hi"))[0][1]
    ids = {"question": started["user_message"]["id"], "answer": started["assistant_message_id"]}
    target = url.format(conversation=conversation, **ids)
    response = await client.request(method.upper(), target, json=body, params=params, headers=alice.headers)
    assert_error(response, 400, "invalid_request_error")


def test_stop_from_another_connection_cuts_the_answer_short(slow_demo_server: RunningServer) -> None:
    account = register(slow_demo_server.base_url, "stopper@example.com")
    with (
        httpx.Client(base_url=slow_demo_server.base_url, headers=account.jwt_headers, timeout=30) as streamer,
        httpx.Client(base_url=slow_demo_server.base_url, headers=account.key_headers, timeout=30) as other,
    ):
        conversation = streamer.post("/api/conversations", json={}).json()["id"]
        url = f"/api/conversations/{conversation}/messages"
        names: list[str] = []
        with streamer.stream("POST", url, json={"content": "a long story please"}) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: ") and names == ["message"]:
                    reply_id = orjson.loads(line[6:])["assistant_message_id"]
                if line.startswith("event: "):
                    names.append(line[7:])
                if names.count("delta") == 2:
                    break
            started = time.monotonic()
            stopped = other.post(f"{url}/{reply_id}/stop")
            rest = list(lines)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "cancelled" and stopped.json()["content"]
        assert time.monotonic() - started < 10
        done = orjson.loads(rest[rest.index("event: done") + 1].removeprefix("data: "))
        assert done["status"] == "cancelled" and done["content"] == stopped.json()["content"]
