"""`open_application`: migrates, wires the services, creates the signing key, closes cleanly."""

from __future__ import annotations

import stat
from pathlib import Path

from ziggurat.application.auth.signing_key import KEY_FILE_NAME
from ziggurat.application.container import open_application
from ziggurat.application.store.schema import current_revision, head_revision
from ziggurat.config import Settings
from ziggurat.service.generation import GenerationService


async def test_open_application_migrates_and_generates_a_private_signing_key(
    tmp_path: Path, database_url: str, generation: GenerationService
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url)
    async with open_application(settings, generation) as application:
        registration = await application.auth.register("first@example.com", "correct horse")
        principal = await application.authenticator.authenticate(registration.tokens.access_token)
        assert principal.is_admin
        assert await application.database.ping()
    assert await current_revision(database_url) == head_revision()
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # A restart keeps the key, so tokens issued before it still work.
    async with open_application(settings, generation) as application:
        await application.authenticator.authenticate(registration.tokens.access_token)


async def test_the_default_database_is_a_sqlite_file_in_the_data_dir(
    tmp_path: Path, generation: GenerationService
) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    async with open_application(settings, generation) as application:
        assert application.database.is_sqlite
    assert (tmp_path / "fresh" / "ziggurat.db").exists()
