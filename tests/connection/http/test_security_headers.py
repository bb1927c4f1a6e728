"""Security headers on every response: API JSON, errors, streams and the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.connection.http.inprocess import MODEL, app_client, app_settings, cheap_passwords, sign_up
from ziggurat.app import build_app
from ziggurat.connection.http.security_headers import with_security_headers
from ziggurat.connection.http.web import CONTENT_SECURITY_POLICY


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    cheap_passwords(monkeypatch)
    root = tmp_path / "web"
    root.mkdir()
    (root / "index.html").write_text('<!doctype html><script type="module" src="{{STATIC}}/a.js"></script>')
    (root / "a.js").write_text("export {};\n")
    settings = app_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'ziggurat.db'}",
        web={"root": str(root)},
        http={"max_request_bytes": 1024},
    )
    async with app_client(build_app(settings)) as client:
        yield client


def _assert_base_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    assert response.headers["referrer-policy"] == "same-origin", response.request.url


async def test_api_responses_and_errors_carry_the_base_headers(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/api/nope"),
        await client.get("/v1/models"),
        await client.post(
            "/api/auth/login", content=b"{" * 2048, headers={"content-type": "application/json"}
        ),
        await client.post("/api/auth/refresh", json={}),
    ]
    assert [response.status_code for response in responses] == [200, 404, 401, 413, 401]
    for response in responses:
        _assert_base_headers(response)
        assert "x-frame-options" not in response.headers  # not HTML: nothing to frame
        assert "content-security-policy" not in response.headers


async def test_a_streamed_answer_carries_the_base_headers(client: httpx.AsyncClient) -> None:
    session = await sign_up(client, "s@example.com")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=session.headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        _assert_base_headers(stream)
        assert b"[DONE]" in b"".join([chunk async for chunk in stream.aiter_bytes()])


async def test_html_gets_frame_protection_and_the_page_its_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/c/abc")
    _assert_base_headers(page)
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers.get_list("x-frame-options") == ["DENY"]  # set once, not twice
    assert (
        "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    )
    docs = await client.get("/docs")  # FastAPI's page loads scripts from a CDN: no policy forced on it
    assert docs.status_code == 200 and docs.headers["x-frame-options"] == "DENY"
    _assert_base_headers(docs)
    asset = await client.get(page.text.split('src="', 1)[1].split('"', 1)[0])
    assert asset.status_code == 200
    _assert_base_headers(asset)


def test_headers_a_route_set_itself_are_kept() -> None:
    headers = [(b"Referrer-Policy", b"no-referrer"), (b"content-type", b"text/html; charset=utf-8")]
    result = dict(with_security_headers(list(headers)))
    assert result[b"Referrer-Policy"] == b"no-referrer" and b"referrer-policy" not in result
    assert result[b"x-frame-options"] == b"DENY" and result[b"x-content-type-options"] == b"nosniff"
