"""Loading the transformers engine's model: `from_pretrained` off the event loop, and clear errors.

Every bad model reference must become a `ConfigurationError` that names it, so
an operator sees what to fix instead of a traceback.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ziggurat.errors import ConfigurationError
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
)
from ziggurat.model.engines.transformers import TransformersEngine
from ziggurat.model.engines.transformers_text import render_fallback_prompt

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_path)


async def test_start_loads_through_from_pretrained_off_the_event_loop(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded_from: list[str] = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(location: str, *args: Any, **kwargs: Any) -> Any:
        loaded_from.append(location)
        return original(location, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    engine = TransformersEngine(
        model_path=str(tiny_llama_path), served_name="tiny", max_batch_size=3, default_max_tokens=8
    )
    assert not engine.is_ready
    ticks = 0
    is_started = False

    async def tick() -> None:
        nonlocal ticks
        while not is_started:
            ticks += 1
            await asyncio.sleep(0.001)

    async def start() -> None:
        nonlocal is_started
        await engine.start()
        is_started = True

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(tick())
            group.create_task(start())
        assert engine.is_ready
        assert loaded_from == [str(tiny_llama_path)]
        assert ticks > 1, "the event loop was blocked while the model loaded"
        assert engine.capacity == 3
        assert engine.info == ModelInfo(name="tiny", engine="transformers", context_length=256)
    finally:
        await engine.aclose()
    assert not engine.is_ready


async def test_tokenizer_without_chat_template_uses_the_fallback_template(
    tiny_llama_path: Path, tmp_path: Path, tokenizer: Any
) -> None:
    model_dir = tmp_path / "no-template"
    shutil.copytree(tiny_llama_path, model_dir)
    (model_dir / "chat_template.jinja").unlink()
    engine = TransformersEngine(
        model_path=str(model_dir), served_name="base", max_batch_size=2, default_max_tokens=8
    )
    await engine.start()
    try:
        messages = (ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi"))
        request = GenerationRequest("r", "base", messages, SamplingParams(temperature=0))
        events = [event async for event in engine.generate(request)]
    finally:
        await engine.aclose()

    end = events[-1]
    assert isinstance(end, GenerationEnd)
    expected_prompt = tokenizer(render_fallback_prompt(messages), add_special_tokens=True)["input_ids"]
    assert end.usage.prompt_tokens == len(expected_prompt)


def _missing(tiny: Path, tmp: Path) -> Path:
    return tmp / "does-not-exist"


def _empty_directory(tiny: Path, tmp: Path) -> Path:
    path = tmp / "empty"
    path.mkdir()
    return path


def _corrupt_weights(tiny: Path, tmp: Path) -> Path:
    path = tmp / "corrupt"
    shutil.copytree(tiny, path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return path


def _corrupt_config(tiny: Path, tmp: Path) -> Path:
    path = tmp / "bad-config"
    shutil.copytree(tiny, path)
    (path / "config.json").write_text("{not json")
    return path


def _not_a_model_file(tiny: Path, tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("hello")
    return path


@pytest.mark.parametrize(
    "make_path", [_missing, _empty_directory, _corrupt_weights, _corrupt_config, _not_a_model_file]
)
async def test_a_bad_model_path_is_a_configuration_error_naming_it(
    tiny_llama_path: Path, tmp_path: Path, make_path: Callable[[Path, Path], Path]
) -> None:
    path = make_path(tiny_llama_path, tmp_path)
    engine = TransformersEngine(model_path=str(path), served_name="x", max_batch_size=1, default_max_tokens=8)

    with pytest.raises(ConfigurationError, match=str(path)):
        await engine.start()

    assert not engine.is_ready


@pytest.mark.parametrize(("device", "dtype"), [("cpu", "float8"), ("tpu-9", "auto")])
async def test_unknown_device_or_dtype_is_a_configuration_error(
    tiny_llama_path: Path, device: str, dtype: str
) -> None:
    engine = TransformersEngine(
        model_path=str(tiny_llama_path),
        served_name="x",
        max_batch_size=1,
        default_max_tokens=8,
        device=device,
        dtype=dtype,
    )

    with pytest.raises(ConfigurationError):
        await engine.start()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, (1.0, 1.0)),
        ({"do_sample": False}, (0.0, 1.0)),
        ({"do_sample": True, "temperature": 0.6, "top_p": 0.9}, (0.6, 0.9)),
        ({"temperature": 0.3}, (0.3, 1.0)),
    ],
)
def test_unset_sampling_follows_the_models_explicit_generation_config(
    config: dict[str, object], expected: tuple[float, float]
) -> None:
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from ziggurat.model.engines.transformers_loading import sampling_defaults

    model = SimpleNamespace(generation_config=GenerationConfig(**config))
    defaults = sampling_defaults(model)
    assert (defaults.temperature, defaults.top_p) == expected
