"""SIGTERM on a real server: it drains (not ready, new generations refused) and cuts no stream in flight.

The server runs `DrainingServer`, what `ziggurat serve` runs, in a thread;
the test delivers the signal by calling its handler, as the signal would.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.connection.http.conftest import Account, demo_settings, register
from tests.connection.http.inprocess import cheap_passwords
from tests.connection.http.test_ws import new_conversation, receive, send, signed_in, streams, text_of
from tests.server import RunningServer, running_server
from ziggurat.config import HttpSettings
from ziggurat.model.engines.demo import compose_reply

QUESTION = "Tell me about the ziggurat of Ur and its builders"
EXPECTED = compose_reply(QUESTION, seed=None)


@pytest.fixture(autouse=True)
def _cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_passwords(monkeypatch)


def draining_server(tmp_path: Path, *, grace_s: float, inter_token_s: float) -> Iterator[RunningServer]:
    settings = demo_settings(tmp_path, max_concurrency=4, demo_inter_token_s=inter_token_s)
    settings = settings.model_copy(update={"http": HttpSettings(drain_grace_s=grace_s)})
    with running_server(settings) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """About 3 s per answer, and a grace period long enough for it."""
    yield from draining_server(tmp_path, grace_s=20, inter_token_s=0.03)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    # State on the server's thread has no event this loop could await: poll it.
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def completion(stream: bool) -> dict[str, object]:
    return {"model": "ziggurat-demo", "messages": [{"role": "user", "content": QUESTION}], "stream": stream}


async def read_completion_text(lines: AsyncIterator[str]) -> tuple[str, str | None]:
    """The text of an OpenAI chunk stream and its finish reason, read to `[DONE]`."""
    text: list[str] = []
    finish = None
    async for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        choice = json.loads(line.removeprefix("data: "))["choices"][0]
        text.append(choice["delta"].get("content") or "")
        finish = choice.get("finish_reason") or finish
    return "".join(text), finish


async def assert_refused_while_draining(server: RunningServer, account: Account) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        assert (await client.get("/healthz")).status_code == 200  # alive: nobody should restart it
        refused = await client.post(
            "/v1/chat/completions", json=completion(False), headers=account.key_headers
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("overloaded_error", "shutting_down")
        # A chat message is refused before anything is stored: the retry elsewhere starts clean.
        conversation_id = new_conversation(server, account)
        posted = await client.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "hello?"},
            headers=account.jwt_headers,
        )
        assert posted.status_code == 503
        stored = await client.get(f"/api/conversations/{conversation_id}", headers=account.jwt_headers)
        assert stored.json()["messages"] == []


async def test_sigterm_drains_and_the_streams_in_flight_finish(server: RunningServer) -> None:
    account = register(server.base_url, "drain@example.com")
    conversation_id = new_conversation(server, account)
    draining = server.services.draining
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=completion(True), headers=account.key_headers
        ) as sse,
        signed_in(server, account.access_token) as socket,
    ):
        assert sse.status_code == 200
        lines = sse.aiter_lines()
        first = [await anext(lines) for _ in range(6)]  # the role chunk and some text
        await send(
            socket, {"type": "chat", "id": "w", "conversation_id": conversation_id, "content": QUESTION}
        )
        opened = [await receive(socket) for _ in range(2)]  # the stored question and the first text
        assert [frame["type"] for frame in opened] == ["message", "delta"]

        server.server.handle_exit(signal.SIGTERM, None)
        await eventually(lambda: draining.is_draining)
        await assert_refused_while_draining(server, account)

        rest, finish = await read_completion_text(lines)
        head, _ = await read_completion_text(_aiter(first))
        assert (head + rest, finish) == (EXPECTED, "stop")
        frames = opened + (await streams(socket, "w"))["w"]
    done = frames[-1]
    assert done["type"] == "done" and done["message"]["status"] == "complete"
    assert text_of(frames) == done["message"]["content"] == EXPECTED
    # Nothing is left in flight: the server stops by itself, well before the grace period ends.
    await asyncio.to_thread(server.thread.join, 15)
    assert not server.thread.is_alive()


async def test_the_grace_period_bounds_the_drain(tmp_path: Path) -> None:
    # About 20 s per answer and one second of grace: the stream is cut, the server does not wait for it.
    for server in draining_server(tmp_path, grace_s=1, inter_token_s=0.2):
        account = register(server.base_url, "slow@example.com")
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
            client.stream(
                "POST", "/v1/chat/completions", json=completion(True), headers=account.key_headers
            ) as sse,
        ):
            lines = sse.aiter_lines()
            await anext(lines)
            server.server.handle_exit(signal.SIGTERM, None)
            await asyncio.to_thread(server.thread.join, 10)
            assert not server.thread.is_alive()
            with pytest.raises(httpx.RemoteProtocolError):  # the connection ended mid-stream
                await read_completion_text(lines)


async def _aiter(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item
