"""The key that signs access tokens when the operator did not set `ZIGGURAT_SECRET_KEY`.

Generated once and kept in the data folder (mode 0600), so tokens survive a
restart of a single-machine install. Several replicas must share one key, so
production sets it explicitly. The key is never logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ziggurat.errors import ConfigurationError

KEY_FILE_NAME = "secret_key"
_MIN_KEY_CHARS = 32


def load_or_create_signing_key(data_dir: Path) -> str:
    """Read the key file in `data_dir`, creating it (and the folder) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE_NAME
    try:
        # O_EXCL: if two processes start at once, exactly one writes and the other reads.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        if len(key) < _MIN_KEY_CHARS:
            raise ConfigurationError(
                f"The signing key file {path} is empty or too short; delete it to generate a new one."
            ) from None
        return key
    key = secrets.token_urlsafe(64)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key)
    return key
