"""A real ziggurat server (demo engine, SQLite) plus a registered user and API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.connection.http.inprocess import app_client, app_settings, cheap_passwords
from tests.server import RunningServer, running_server
from ziggurat.app import build_app
from ziggurat.config import EngineSettings, Settings

TEST_SECRET_KEY = "s" * 48


def demo_settings(tmp_path: Path, **engine: object) -> Settings:
    values: dict[str, object] = {"kind": "demo", "demo_time_to_first_token_s": 0, "demo_inter_token_s": 0.001}
    engine_settings = EngineSettings.model_validate({**values, **engine})
    return Settings(
        data_dir=tmp_path, cache_dir=tmp_path / "cache", engine=engine_settings, secret_key=TEST_SECRET_KEY
    )  # type: ignore[arg-type]


@dataclass
class Account:
    email: str
    access_token: str
    api_key: str
    api_key_id: str

    @property
    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def jwt_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register(base_url: str, email: str) -> Account:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        registered = client.post(
            "/api/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert registered.status_code == 201, registered.text
        access = registered.json()["tokens"]["access_token"]
        created = client.post(
            "/api/keys", json={"name": "test"}, headers={"Authorization": f"Bearer {access}"}
        )
        assert created.status_code == 201, created.text
        key = created.json()
        return Account(email=email, access_token=access, api_key=key["key"], api_key_id=key["id"])


@pytest.fixture
async def client(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app (demo engine, no background titles) on both databases, as an httpx client."""
    cheap_passwords(monkeypatch)
    settings = app_settings(tmp_path, database_url, conversations={"auto_title": False})
    async with app_client(build_app(settings)) as client:
        yield client


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(demo_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def slow_demo_server(tmp_path: Path) -> Iterator[RunningServer]:
    """One engine slot and a slow token rate, so a stream is still running when the test acts."""
    with running_server(demo_settings(tmp_path, max_concurrency=1, demo_inter_token_s=0.05)) as server:
        yield server


@pytest.fixture
def alice(demo_server: RunningServer) -> Account:
    return register(demo_server.base_url, "alice@example.com")
