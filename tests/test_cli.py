"""The `ziggurat` command: version, and clear errors (exit 2, no traceback) for bad models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ziggurat import __version__


def run_cli(*args: str, tmp_path: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ZIGGURAT_DATA_DIR": str(tmp_path / "data"),
        "ZIGGURAT_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "ZIGGURAT_LOG__JSON_FORMAT": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "ziggurat.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", tmp_path=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ziggurat {__version__}"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("/nonexistent/model-dir", "not found"),
        ("not a model at all", "not found"),
    ],
)
def test_missing_model_fails_before_binding(tmp_path: Path, model: str, expected: str) -> None:
    result = run_cli("serve", "--port", "0", "--model", model, tmp_path=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr and model in result.stderr
    assert "Traceback" not in result.stderr


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    result = run_cli("serve", "--port", "0", "--model", str(empty), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "config.json" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_corrupt_gguf_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"this is not a gguf file" * 100)
    result = run_cli("serve", "--port", "0", "--model", str(corrupt), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "ziggurat: Could not read GGUF model" in result.stderr and str(corrupt) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_unknown_hub_id_offline_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--model", "no-such-org/no-such-model", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "no-such-org/no-such-model" in result.stderr
    assert "ziggurat: Could not load" in result.stderr
    assert "Traceback" not in result.stderr


def test_split_role_without_shared_broker_is_refused(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--engine", "demo", "--role", "api", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "ZIGGURAT_BROKER_URL" in result.stderr and "ZIGGURAT_REDIS_URL" in result.stderr


async def _rated_conversation(tmp_path: Path) -> None:
    """A user, one answered question with a thumbs up, and a conversation deleted 40 days ago."""
    from datetime import timedelta

    from tests.connection.http.inprocess import app_client, app_settings, sign_up
    from ziggurat.app import build_app
    from ziggurat.application.conversations.models import Conversation
    from ziggurat.application.store.database import Database
    from ziggurat.application.store.orm import utcnow

    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'ziggurat.db'}"
    settings = app_settings(tmp_path / "data", url, conversations={"auto_title": False})
    async with app_client(build_app(settings)) as client:
        user = await sign_up(client, "cli@example.com")
        ids = []
        for _ in range(2):
            ids.append((await client.post("/api/conversations", json={}, headers=user.headers)).json()["id"])
        body = {"content": "Hi", "max_tokens": 5}
        answer = await client.post(f"/api/conversations/{ids[0]}/messages", json=body, headers=user.headers)
        answer_id = answer.text.split('"assistant_message_id":"', 1)[1].split('"', 1)[0]
        await client.put(f"/api/messages/{answer_id}/feedback", json={"thumb": "up"}, headers=user.headers)
        await client.delete(f"/api/conversations/{ids[1]}", headers=user.headers)
    database = Database(url)
    try:
        async with database.session() as session:
            deleted = await session.get(Conversation, ids[1])
            assert deleted is not None
            deleted.deleted_at = utcnow() - timedelta(days=40)
            await session.commit()
    finally:
        await database.aclose()


async def test_export_feedback_and_purge_deleted_work_on_the_configured_database(tmp_path: Path) -> None:
    import asyncio

    import orjson

    await _rated_conversation(tmp_path)
    output = tmp_path / "sft.jsonl"

    export = ("export-feedback", "--format", "sft", "--output", str(output), "--thumb", "up")
    exported = await asyncio.to_thread(run_cli, *export, tmp_path=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 1 sft records" in exported.stderr
    [line] = output.read_bytes().splitlines()
    roles = [message["role"] for message in orjson.loads(line)["messages"]]
    assert roles == ["user", "assistant"]

    export = ("export-feedback", "--format", "preference", "--output", "-", "--since", "2999-01-01")
    none = await asyncio.to_thread(run_cli, *export, tmp_path=tmp_path)
    assert none.returncode == 0 and none.stdout == "" and "wrote 0 preference records" in none.stderr

    purged = await asyncio.to_thread(run_cli, "purge-deleted", tmp_path=tmp_path)
    assert purged.returncode == 0 and "purged 1 conversations" in purged.stderr
    again = await asyncio.to_thread(run_cli, "purge-deleted", "--older-than-days", "1", tmp_path=tmp_path)
    assert again.returncode == 0 and "purged 0 conversations" in again.stderr
