"""Loading a model and its tokenizer for the transformers engine, with errors an operator can act on.

`load_model` decides where the model comes from (a local directory, a `.gguf`
file, or a hub id), which device and dtype to use and how long its context is,
then loads through `AutoTokenizer` and `AutoModelForCausalLM.from_pretrained`.
Every way loading can fail becomes a `ConfigurationError` that names what was
tried, never a raw traceback. A local path never touches the network
(`local_files_only`). Nothing here quantises, compiles or shards a model.

Blocking: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from ziggurat.errors import ConfigurationError
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

FALLBACK_CONTEXT_LENGTH = 2048
"""Used when neither the settings nor the model config say how long the context is."""

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, SafetensorError)


@dataclass(slots=True, frozen=True)
class ModelSource:
    """Where `from_pretrained` looks: a local directory (maybe with a GGUF file in it) or a hub id."""

    location: str
    gguf_file: str | None
    is_local: bool

    def describe(self) -> str:
        if self.gguf_file:
            return f"GGUF file {str(Path(self.location) / self.gguf_file)!r}"
        if self.is_local:
            return f"model directory {self.location!r}"
        return f"hub model id {self.location!r}"


@dataclass(slots=True, frozen=True)
class SamplingDefaults:
    """What the model's generation config asks for when the client sets nothing."""

    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(slots=True)
class LoadedModel:
    """A model ready for inference, with what the engine needs to know about it."""

    model: Any
    tokenizer: Any
    device: torch.device
    eos_token_ids: frozenset[int]
    context_length: int
    sampling: SamplingDefaults


def resolve_source(model_path: str) -> ModelSource:
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(location=str(path.parent), gguf_file=path.name, is_local=True)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigurationError(
                f"Model directory {model_path!r} has no config.json: expected a transformers model "
                "directory (config.json, weights, tokenizer files) or a .gguf file."
            )
        return ModelSource(location=str(path), gguf_file=None, is_local=True)
    if path.exists():
        raise ConfigurationError(
            f"Model path {model_path!r} is a file but not a .gguf file: expected a transformers "
            "model directory or a .gguf file."
        )
    if _looks_like_path(model_path):
        raise ConfigurationError(f"Model path {model_path!r} does not exist.")
    return ModelSource(location=model_path, gguf_file=None, is_local=False)


def _looks_like_path(model_path: str) -> bool:
    # Hub ids are `name` or `namespace/name`; anything else can only have been meant as a path.
    return (
        model_path.startswith(("/", ".", "~"))
        or "\\" in model_path
        or model_path.count("/") > 1
        or model_path.endswith(".gguf")
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigurationError(f"Unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"Device {name!r} was requested but CUDA is not available.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU that supports it (else float16), float32 on CPU (fast and exact there)."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return _DTYPES[name.lower()]
    except KeyError as exc:
        choices = ", ".join(["auto", *_DTYPES])
        raise ConfigurationError(f"Unknown dtype {name!r}: use one of {choices}.") from exc


def load_model(
    model_path: str, *, device: str, dtype: str, context_length: int | None, cpu_threads: int | None
) -> LoadedModel:
    """Load tokenizer and weights; raises `ConfigurationError` for anything an operator must fix."""
    source = resolve_source(model_path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if cpu_threads is not None:
        torch.set_num_threads(cpu_threads)
    common: dict[str, Any] = {"local_files_only": source.is_local}
    if source.gguf_file:
        common["gguf_file"] = source.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
        model = AutoModelForCausalLM.from_pretrained(
            source.location,
            dtype=torch_dtype,
            device_map=None if torch_device.type == "cpu" else str(torch_device),
            **common,
        )
    except _LOAD_ERRORS as exc:
        raise ConfigurationError(
            f"Could not load the {source.describe()} with transformers: {_first_line(exc)}"
        ) from exc
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        eos_token_ids=eos_token_ids(model, tokenizer),
        context_length=context_length or model_context_length(model, tokenizer),
        sampling=sampling_defaults(model),
    )
    log.info(
        "model_loaded",
        source=source.describe(),
        device=str(torch_device),
        dtype=str(torch_dtype),
        context_length=loaded.context_length,
    )
    return loaded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def sampling_defaults(model: Any) -> SamplingDefaults:
    """Only what the model's authors set explicitly counts (as vLLM does); the rest is OpenAI's default."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return SamplingDefaults()
    explicit: dict[str, Any] = config.to_diff_dict()
    if explicit.get("do_sample") is False:
        return SamplingDefaults(temperature=0.0, top_p=1.0)
    temperature = explicit.get("temperature")
    top_p = explicit.get("top_p")
    return SamplingDefaults(
        temperature=float(temperature) if isinstance(temperature, (int, float)) else 1.0,
        top_p=float(top_p) if isinstance(top_p, (int, float)) and 0 < top_p <= 1 else 1.0,
    )


def eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The generation config's EOS ids (one or a list), else the tokenizer's EOS token."""
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if configured is None:
        configured = getattr(tokenizer, "eos_token_id", None)
    if configured is None:
        return frozenset()
    if isinstance(configured, int):
        return frozenset({configured})
    return frozenset(int(token_id) for token_id in configured)


def model_context_length(model: Any, tokenizer: Any) -> int:
    text_config = model.config.get_text_config()
    from_config = getattr(text_config, "max_position_embeddings", None)
    if isinstance(from_config, int) and from_config > 0:
        return from_config
    # Tokenizers without a configured limit report a huge sentinel (int(1e30)).
    from_tokenizer = getattr(tokenizer, "model_max_length", None)
    if isinstance(from_tokenizer, int) and 0 < from_tokenizer < 10_000_000:
        return from_tokenizer
    return FALLBACK_CONTEXT_LENGTH
