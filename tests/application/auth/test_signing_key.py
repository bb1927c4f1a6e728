"""The generated signing key: created once, private, reused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ziggurat.application.auth.signing_key import KEY_FILE_NAME, load_or_create_signing_key
from ziggurat.errors import ConfigurationError


def test_the_key_is_created_private_and_then_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    key = load_or_create_signing_key(data_dir)

    path = data_dir / KEY_FILE_NAME
    assert len(key) >= 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_signing_key(data_dir) == key


def test_a_truncated_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("short")
    with pytest.raises(ConfigurationError, match="too short"):
        load_or_create_signing_key(tmp_path)
