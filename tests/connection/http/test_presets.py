"""Preset routes: CRUD, a conversation using one, duplicate names, ownership, bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.connection.http.inprocess import (
    Session,
    assert_error,
    sign_up,
)


async def test_presets_crud_and_use(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice@example.com")
    created = await client.post(
        "/api/presets",
        json={"name": "Brief", "system_prompt": "Answer in one line.", "max_tokens": 5},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    preset = created.json()
    assert_error(
        await client.post("/api/presets", json={"name": "Brief"}, headers=alice.headers),
        409,
        "conflict_error",
    )

    conversation = (
        await client.post("/api/conversations", json={"preset_id": preset["id"]}, headers=alice.headers)
    ).json()
    answer = await client.post(
        f"/api/conversations/{conversation['id']}/messages", json={"content": "hello"}, headers=alice.headers
    )
    assert '"completion_tokens":5' in answer.text  # the preset's max_tokens applied

    changed = await client.patch(
        f"/api/presets/{preset['id']}", json={"max_tokens": None}, headers=alice.headers
    )
    assert changed.status_code == 200 and changed.json()["max_tokens"] is None
    assert [p["name"] for p in (await client.get("/api/presets", headers=alice.headers)).json()["data"]] == [
        "Brief"
    ]
    assert (await client.delete(f"/api/presets/{preset['id']}", headers=alice.headers)).status_code == 204
    assert_error(await client.get(f"/api/presets/{preset['id']}", headers=alice.headers), 404)


async def test_another_users_preset_is_404(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice@example.com")
    bob: Session = await sign_up(client, "bob@example.com")
    preset = (await client.post("/api/presets", json={"name": "Mine"}, headers=alice.headers)).json()
    for response in (
        await client.get(f"/api/presets/{preset['id']}", headers=bob.headers),
        await client.patch(f"/api/presets/{preset['id']}", json={"name": "x"}, headers=bob.headers),
        await client.delete(f"/api/presets/{preset['id']}", headers=bob.headers),
        await client.post("/api/conversations", json={"preset_id": preset["id"]}, headers=bob.headers),
    ):
        assert_error(response, 404, "not_found_error")
    assert (await client.get("/api/presets", headers=bob.headers)).json() == {"data": []}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "temperature": -1},
        {"name": "x", "max_tokens": 0},
        {"name": "x", "extra": 1},
    ],
)
async def test_bad_presets_get_400(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    alice = await sign_up(client, "alice@example.com")
    assert_error(
        await client.post("/api/presets", json=body, headers=alice.headers), 400, "invalid_request_error"
    )
