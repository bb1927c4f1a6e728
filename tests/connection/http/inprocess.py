"""An in-process app (ASGI, demo engine, cheap password hashing) and account helpers for API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import ziggurat.application.container as container
from ziggurat.application.auth.passwords import PasswordHasher
from ziggurat.config import EngineSettings, Settings

PASSWORD = "correct horse battery"
MODEL = "ziggurat-demo"


def app_settings(tmp_path: Path, database_url: str, **overrides: object) -> Settings:
    engine = EngineSettings(kind="demo", demo_inter_token_s=0, demo_time_to_first_token_s=0)
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "cache_dir": tmp_path / "cache",
        "engine": engine,
        "database_url": database_url,
        "secret_key": "t" * 48,
    }
    return Settings.model_validate({**values, **overrides})


def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest argon2 cost for the app under test: these tests check behaviour, not hashing."""
    monkeypatch.setattr(container, "PasswordHasher", lambda: PasswordHasher(time_cost=1, memory_cost_kib=64))


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@dataclass
class Session:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def sign_up(client: httpx.AsyncClient, email: str, **extra: str) -> Session:
    response = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    tokens = body["tokens"]
    return Session(body["user"]["id"], email, tokens["access_token"], tokens["refresh_token"])


def assert_error(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, object]:
    """The response is an OpenAI-shaped JSON error with this status (and type)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if kind is not None:
        assert error["type"] == kind
    return dict(error)
