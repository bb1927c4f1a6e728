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
    assert "shared broker" in result.stderr
