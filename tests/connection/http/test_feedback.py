"""Feedback routes: rate own answers, admin review (403 for others), streamed JSONL export."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.application.feedback.conftest import check_chat
from tests.connection.http.inprocess import (
    Session,
    assert_error,
    sign_up,
)


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> Session:
    return await sign_up(client, "admin@example.com")


@pytest.fixture
async def alice(client: httpx.AsyncClient, admin: Session) -> Session:
    return await sign_up(client, "alice@example.com")


async def _answer(client: httpx.AsyncClient, session: Session, content: str) -> tuple[str, str]:
    """(user message id, answer id) of a new one-turn conversation."""
    conversation = (await client.post("/api/conversations", json={}, headers=session.headers)).json()["id"]
    response = await client.post(
        f"/api/conversations/{conversation}/messages",
        json={"content": content, "max_tokens": 6},
        headers=session.headers,
    )
    started = orjson.loads(response.text.split("data: ", 1)[1].split("\n", 1)[0])
    return started["user_message"]["id"], started["assistant_message_id"]


async def test_rate_change_read_and_delete_own_feedback(client: httpx.AsyncClient, alice: Session) -> None:
    _, answer = await _answer(client, alice, "hello")
    url = f"/api/messages/{answer}/feedback"
    created = await client.post(url, json={"thumb": "up", "comment": "good"}, headers=alice.headers)
    assert created.status_code == 201 and created.json()["thumb"] == "up"
    assert_error(await client.post(url, json={"thumb": "down"}, headers=alice.headers), 409, "conflict_error")
    replaced = await client.put(url, json={"rating": 4}, headers=alice.headers)
    assert replaced.status_code == 200 and (replaced.json()["thumb"], replaced.json()["rating"]) == (None, 4)
    assert (await client.get(url, headers=alice.headers)).json() == replaced.json()
    assert [f["id"] for f in (await client.get("/api/feedback", headers=alice.headers)).json()["data"]] == [
        created.json()["id"]
    ]
    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert_error(await client.get(url, headers=alice.headers), 404)
    recreated = await client.put(url, json={"thumb": "down"}, headers=alice.headers)
    assert recreated.status_code == 201


async def test_feedback_on_others_answers_or_questions_is_refused(
    client: httpx.AsyncClient, admin: Session, alice: Session
) -> None:
    question, answer = await _answer(client, alice, "hello")
    assert_error(
        await client.put(f"/api/messages/{answer}/feedback", json={"thumb": "up"}, headers=admin.headers), 404
    )
    assert_error(await client.get(f"/api/messages/{answer}/feedback", headers=admin.headers), 404)
    assert_error(
        await client.put(f"/api/messages/{question}/feedback", json={"thumb": "up"}, headers=alice.headers),
        400,
    )
    for body in (
        {},
        {"thumb": "sideways"},
        {"rating": 0},
        {"rating": 6},
        {"comment": "x" * 4001},
        {"thumb": "up", "x": 1},
    ):
        assert_error(
            await client.put(f"/api/messages/{answer}/feedback", json=body, headers=alice.headers), 400
        )


async def test_admin_review_and_export(client: httpx.AsyncClient, admin: Session, alice: Session) -> None:
    _, liked = await _answer(client, alice, "What is a ziggurat?")
    _, fixed = await _answer(client, alice, "How tall was it?")
    await client.put(f"/api/messages/{liked}/feedback", json={"thumb": "up"}, headers=alice.headers)
    await client.put(
        f"/api/messages/{fixed}/feedback", json={"corrected_answer": "About 30 m."}, headers=alice.headers
    )

    review = await client.get("/api/admin/feedback", params={"thumb": "up"}, headers=admin.headers)
    assert review.status_code == 200
    assert [(row["user_email"], row["question"]) for row in review.json()["data"]] == [
        ("alice@example.com", "What is a ziggurat?")
    ]
    assert_error(await client.get("/api/admin/feedback", headers=alice.headers), 403, "permission_error")
    assert_error(
        await client.get("/api/admin/feedback/export", headers=alice.headers), 403, "permission_error"
    )
    assert_error(
        await client.get("/api/admin/feedback", params={"min_rating": 9}, headers=admin.headers), 400
    )
    assert_error(
        await client.get("/api/admin/feedback/export", params={"format": "csv"}, headers=admin.headers), 400
    )

    sft = await client.get("/api/admin/feedback/export", params={"format": "sft"}, headers=admin.headers)
    assert sft.status_code == 200 and sft.headers["content-type"].startswith("application/x-ndjson")
    records = [orjson.loads(line) for line in sft.text.splitlines()]
    assert len(records) == 2
    for record in records:
        check_chat(record["messages"], ends_with="assistant")
    assert records[1]["messages"][-1] == {"role": "assistant", "content": "About 30 m."}

    preference = await client.get(
        "/api/admin/feedback/export",
        params={"format": "preference", "user": "alice@example.com", "since": "2000-01-01T00:00:00Z"},
        headers=admin.headers,
    )
    pairs = [orjson.loads(line) for line in preference.text.splitlines()]
    assert [pair["chosen"][0]["content"] for pair in pairs] == ["About 30 m."]
    check_chat(pairs[0]["prompt"], ends_with="user")
