"""`/api/ws` end to end on a real uvicorn server, driven by the `websockets` client; the outbox on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.connection.http.conftest import Account, register
from tests.connection.http.inprocess import cheap_passwords
from tests.server import RunningServer, wait_until
from ziggurat.connection.http import ws, ws_protocol
from ziggurat.connection.http.ws_outbox import Outbox

Frame = dict[str, Any]
RECEIVE_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def _cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the server is built: these tests sign users up, they don't measure hashing."""
    cheap_passwords(monkeypatch)


def ws_url(server: RunningServer) -> str:
    return server.base_url.replace("http://", "ws://", 1) + "/api/ws"


async def receive(socket: ClientConnection) -> Frame:
    """The next frame, skipping the server's heartbeat pings."""
    while True:
        frame: Frame = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S))
        if frame["type"] != "ping":
            return frame


async def send(socket: ClientConnection, frame: Frame) -> None:
    await socket.send(json.dumps(frame))


@asynccontextmanager
async def signed_in(server: RunningServer, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(server)) as socket:
        await send(socket, {"type": "auth", "token": token})
        ready = await receive(socket)
        assert ready["type"] == "ready", ready
        yield socket


async def streams(socket: ClientConnection, *ids: str) -> dict[str, list[Frame]]:
    """Every frame of the streams `ids`, until each has ended (`done` or `error`)."""
    frames: dict[str, list[Frame]] = {stream_id: [] for stream_id in ids}
    open_ids = set(ids)
    while open_ids:
        frame = await receive(socket)
        frames[frame["id"]].append(frame)
        if frame["type"] in ("done", "error"):
            open_ids.discard(frame["id"])
    return frames


def text_of(frames: list[Frame]) -> str:
    return "".join(frame["content"] for frame in frames if frame["type"] == "delta")


def new_conversation(server: RunningServer, account: Account) -> str:
    with httpx.Client(base_url=server.base_url, headers=account.jwt_headers, timeout=30) as client:
        created = client.post("/api/conversations", json={})
        assert created.status_code == 201, created.text
        conversation_id: str = created.json()["id"]
        return conversation_id


def assert_error(frame: Frame, kind: str, code: str | None = None) -> None:
    assert frame["type"] == "error", frame
    assert frame["error"]["type"] == kind, frame
    if code is not None:
        assert frame["error"]["code"] == code, frame
    assert "Traceback" not in frame["error"]["message"]


async def assert_closed_with(socket: ClientConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)
    assert socket.close_code == code


async def test_the_first_frame_must_authenticate(
    demo_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "AUTH_TIMEOUT_S", 0.3)
    account = register(demo_server.base_url, "auth@example.com")
    async with connect(ws_url(demo_server)) as silent:
        assert_error(await receive(silent), "authentication_error")
        await assert_closed_with(silent, ws_protocol.CLOSE_UNAUTHENTICATED)
    first_frames: list[Frame] = [
        {"type": "auth", "token": "not-a-token"},
        {"type": "ping"},
        {"type": "chat", "id": "a", "conversation_id": "c", "content": "hi"},
    ]
    for first in first_frames:
        async with connect(ws_url(demo_server)) as socket:
            await send(socket, first)
            assert_error(await receive(socket), "authentication_error")
            await assert_closed_with(socket, ws_protocol.CLOSE_UNAUTHENTICATED)
    user_ids = set()
    for token in (account.access_token, account.api_key):
        async with signed_in(demo_server, token) as socket:
            await send(socket, {"type": "auth", "token": token})  # refreshing the token: same user
            ready = await receive(socket)
            assert ready["type"] == "ready" and ready["max_streams"] == ws.MAX_STREAMS
            user_ids.add(ready["user_id"])
    assert len(user_ids) == 1


async def test_chat_streams_deltas_then_done_and_the_reply_is_stored(demo_server: RunningServer) -> None:
    account = register(demo_server.base_url, "chat@example.com")
    conversation_id = new_conversation(demo_server, account)
    async with signed_in(demo_server, account.access_token) as socket:
        await send(
            socket, {"type": "chat", "id": "s1", "conversation_id": conversation_id, "content": "rust?"}
        )
        frames = (await streams(socket, "s1"))["s1"]
        started, done = frames[0], frames[-1]
        assert started["type"] == "message" and started["user_message"]["content"] == "rust?"
        assert {frame["type"] for frame in frames[1:-1]} == {"delta"}
        assert all(frame["entry_id"] for frame in frames[1:-1])
        reply = done["message"]
        assert done["type"] == "done" and reply["status"] == "complete"
        assert reply["id"] == started["assistant_message_id"] and text_of(frames) == reply["content"]

        again = {
            "type": "regenerate",
            "id": "s2",
            "conversation_id": conversation_id,
            "message_id": reply["id"],
        }
        await send(socket, again)
        regenerated = (await streams(socket, "s2"))["s2"]
        assert regenerated[-1]["message"]["parent_id"] == reply["parent_id"]
        question = started["user_message"]["id"]
        edit = {"type": "edit", "id": "s3", "conversation_id": conversation_id, "message_id": question}
        await send(socket, {**edit, "content": "go?"})
        edited = (await streams(socket, "s3"))["s3"]
        assert edited[0]["user_message"]["content"] == "go?" and edited[-1]["type"] == "done"

    async with httpx.AsyncClient(base_url=demo_server.base_url, headers=account.jwt_headers) as client:
        stored = (await client.get(f"/api/conversations/{conversation_id}")).json()["messages"]
    assert [m["content"] for m in stored] == ["go?", edited[-1]["message"]["content"]]
    assert stored[0]["sibling_count"] == 2


async def test_two_streams_share_one_socket(demo_server: RunningServer) -> None:
    account = register(demo_server.base_url, "mux@example.com")
    first, second = new_conversation(demo_server, account), new_conversation(demo_server, account)
    async with signed_in(demo_server, account.api_key) as socket:
        await send(socket, {"type": "chat", "id": "a", "conversation_id": first, "content": "apples"})
        await send(socket, {"type": "chat", "id": "b", "conversation_id": second, "content": "bananas"})
        frames = await streams(socket, "a", "b")
    replies = {}
    for stream_id, stream in frames.items():
        assert stream[0]["type"] == "message" and stream[-1]["type"] == "done", stream
        replies[stream_id] = stream[-1]["message"]["content"]
        assert text_of(stream) == replies[stream_id]
    assert "apples" in replies["a"] and "bananas" in replies["b"]


async def test_cancel_stops_the_reply_and_frees_the_engine(slow_demo_server: RunningServer) -> None:
    server = slow_demo_server
    account = register(server.base_url, "cancel@example.com")
    conversation_id = new_conversation(server, account)
    async with signed_in(server, account.access_token) as socket:
        await send(socket, {"type": "cancel", "id": "nothing"})
        assert_error(await receive(socket), "invalid_request_error", "unknown_stream")
        await send(
            socket, {"type": "chat", "id": "c", "conversation_id": conversation_id, "content": "a story"}
        )
        frames = [await receive(socket) for _ in range(3)]  # the message and two deltas
        await send(socket, {"type": "cancel", "id": "c"})
        frames += (await streams(socket, "c"))["c"]
    done = frames[-1]
    assert done["type"] == "done" and done["message"]["status"] == "cancelled"
    assert text_of(frames) == done["message"]["content"]
    engine = server.services.engines[0]
    assert wait_until(lambda: engine.cancelled_count == 1)  # type: ignore[attr-defined]
    async with signed_in(server, account.access_token) as socket:  # cancelled before its reply is known
        await send(socket, {"type": "chat", "id": "d", "conversation_id": conversation_id, "content": "more"})
        await send(socket, {"type": "cancel", "id": "d"})
        early = (await streams(socket, "d"))["d"]
    assert early[0]["type"] == "message" and early[-1]["message"]["status"] == "cancelled"


async def test_a_dropped_socket_resumes_on_a_new_one(slow_demo_server: RunningServer) -> None:
    server = slow_demo_server
    account = register(server.base_url, "resume@example.com")
    conversation_id = new_conversation(server, account)
    chat = {"type": "chat", "id": "x", "conversation_id": conversation_id, "content": "hi", "max_tokens": 20}
    async with signed_in(server, account.access_token) as socket:
        await send(socket, chat)
        before = [await receive(socket) for _ in range(4)]  # the message and three deltas
    reply_id, last_entry = before[0]["assistant_message_id"], before[-1]["entry_id"]
    async with signed_in(server, account.access_token) as socket:
        await send(socket, {"type": "resume", "id": "y", "message_id": reply_id, "after": last_entry})
        after = (await streams(socket, "y"))["y"]
        reply = after[-1]["message"]
        assert after[-1]["type"] == "done" and reply["status"] == "complete"
        assert text_of(before) + text_of(after) == reply["content"]
        await send(socket, {"type": "resume", "id": "z", "message_id": reply_id, "after": last_entry})
        assert [frame["type"] for frame in (await streams(socket, "z"))["z"]] == ["done"]
    assert server.services.engines[0].cancelled_count == 0  # type: ignore[attr-defined]


async def test_another_user_cannot_chat_in_or_resume_alices_conversation(demo_server: RunningServer) -> None:
    alice = register(demo_server.base_url, "alice@example.com")
    bob = register(demo_server.base_url, "bob@example.com")
    conversation_id = new_conversation(demo_server, alice)
    async with signed_in(demo_server, alice.access_token) as socket:
        await send(
            socket, {"type": "chat", "id": "a", "conversation_id": conversation_id, "content": "secret"}
        )
        reply_id = (await streams(socket, "a"))["a"][-1]["message"]["id"]
    async with signed_in(demo_server, bob.access_token) as socket:
        await send(socket, {"type": "chat", "id": "b1", "conversation_id": conversation_id, "content": "hi"})
        await send(socket, {"type": "resume", "id": "b2", "message_id": reply_id})
        regenerate = {
            "type": "regenerate",
            "id": "b3",
            "conversation_id": conversation_id,
            "message_id": reply_id,
        }
        await send(socket, regenerate)
        frames = await streams(socket, "b1", "b2", "b3")
        for stream in frames.values():
            assert len(stream) == 1
            assert_error(stream[0], "not_found_error")
            assert "secret" not in json.dumps(stream)
        await send(socket, {"type": "auth", "token": alice.access_token})  # one socket, one user
        assert_error(await receive(socket), "permission_error")


async def test_bad_frames_get_errors_and_the_socket_stays_open(demo_server: RunningServer) -> None:
    account = register(demo_server.base_url, "bad@example.com")
    async with signed_in(demo_server, account.access_token) as socket:
        await socket.send("{not json")
        assert_error(await receive(socket), "invalid_request_error")
        await send(socket, {"type": "shout", "id": "q"})
        unknown = await receive(socket)
        assert_error(unknown, "invalid_request_error", "unknown_type")
        await send(socket, {"type": "chat", "id": "q", "conversation_id": "c"})
        missing = await receive(socket)
        assert_error(missing, "invalid_request_error")
        assert missing["id"] == "q" and missing["error"]["param"] == "content"
        await send(socket, {"type": "resume", "id": "q", "message_id": "m", "after": "../etc"})
        assert_error(await receive(socket), "invalid_request_error")
        await send(socket, {"type": "chat", "id": "q", "conversation_id": "c", "content": "x" * 70_000})
        oversize = await receive(socket)
        assert_error(oversize, "invalid_request_error", "payload_too_large")
        await socket.send(b"\x00binary")
        assert_error(await receive(socket), "invalid_request_error")
        await send(socket, {"type": "ping"})
        assert await receive(socket) == {"type": "pong"}


async def test_stream_limits_per_socket(slow_demo_server: RunningServer) -> None:
    server = slow_demo_server
    account = register(server.base_url, "limits@example.com")
    ids = [f"s{index}" for index in range(ws.MAX_STREAMS)]
    conversations = [new_conversation(server, account) for _ in ids]
    async with signed_in(server, account.api_key) as socket:
        for stream_id, conversation_id in zip(ids, conversations, strict=True):
            chat = {"id": stream_id, "conversation_id": conversation_id, "content": "hi", "max_tokens": 3}
            await send(socket, {"type": "chat", **chat})
        await send(socket, {"type": "chat", "id": "s0", "conversation_id": conversations[0], "content": "x"})
        await send(
            socket, {"type": "chat", "id": "extra", "conversation_id": conversations[0], "content": "x"}
        )
        frames = await streams(socket, *ids, "extra")
    assert_error(frames["extra"][0], "rate_limit_error", "too_many_streams")
    duplicate = [frame for frame in frames["s0"] if frame["type"] == "error"]
    assert len(duplicate) == 1 and duplicate[0]["error"]["code"] == "duplicate_stream_id"
    assert all(frames[stream_id][-1]["type"] == "done" for stream_id in ids)


async def test_ping_pong_and_a_silent_client_is_closed(
    demo_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "HEARTBEAT_S", 0.2)
    account = register(demo_server.base_url, "ping@example.com")
    async with connect(ws_url(demo_server)) as socket:
        await send(socket, {"type": "auth", "token": account.access_token})
        assert (await receive(socket))["heartbeat_s"] == 0.2
        await send(socket, {"type": "ping"})
        assert await receive(socket) == {"type": "pong"}
        heard = []
        with pytest.raises(ConnectionClosed):
            while True:  # the server pings while it waits, then gives up on this silent client
                heard.append(json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT_S)))
        assert heard and all(frame == {"type": "ping"} for frame in heard)
        assert socket.close_code == ws_protocol.CLOSE_IDLE


async def test_a_slow_reader_gets_all_the_text(demo_server: RunningServer) -> None:
    account = register(demo_server.base_url, "slow@example.com")
    conversation_id = new_conversation(demo_server, account)
    async with signed_in(demo_server, account.access_token) as socket:
        await send(socket, {"type": "chat", "id": "s", "conversation_id": conversation_id, "content": "hi"})
        await asyncio.sleep(1.0)  # the whole reply is generated meanwhile
        frames = (await streams(socket, "s"))["s"]
    reply = frames[-1]["message"]
    assert text_of(frames) == reply["content"]
    assert len(frames) - 2 <= reply["usage"]["completion_tokens"]


async def test_the_outbox_coalesces_deltas_while_the_writer_is_behind() -> None:
    outbox = Outbox(max_frames=4, max_pending_chars=16)
    outbox.put({"type": "message", "id": "a"}, stream=1)
    for index, piece in enumerate(["He", "llo", " wor", "ld"]):
        assert outbox.add_delta(1, "a", piece, f"1-{index}")
    outbox.add_delta(2, "b", "other", "2-0")
    outbox.put({"type": "done", "id": "a"}, stream=1)
    outbox.add_delta(3, "a", "new", "3-0")  # the id `a` reused by a new stream: never merged into the old
    taken = [json.loads(await outbox.take()) for _ in range(len(outbox))]
    assert taken == [
        {"type": "message", "id": "a"},
        {"type": "delta", "id": "a", "content": "Hello world", "entry_id": "1-3"},
        {"type": "delta", "id": "b", "content": "other", "entry_id": "2-0"},
        {"type": "done", "id": "a"},
        {"type": "delta", "id": "a", "content": "new", "entry_id": "3-0"},
    ]
    assert outbox.deltas_coalesced == 3


async def test_the_outbox_caps_a_streams_waiting_text_and_pushes_back_on_the_reader() -> None:
    outbox = Outbox(max_frames=2, max_pending_chars=10)
    assert outbox.add_delta(1, "a", "0123456789", "1-0")
    assert not outbox.add_delta(1, "a", "!", "1-1")  # the caller ends the stream: `slow_consumer`
    outbox.put({"type": "error", "id": "a"}, stream=1)
    room = asyncio.create_task(outbox.wait_for_room())
    await asyncio.sleep(0)
    assert not room.done()
    assert json.loads(await outbox.take())["entry_id"] == "1-0"
    await asyncio.wait_for(room, 1)
    outbox.offer_ping('{"type": "ping"}')  # not on a busy socket
    assert json.loads(await outbox.take()) == {"type": "error", "id": "a"}
    assert len(outbox) == 0
