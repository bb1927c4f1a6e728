"""Several LoRA adapters on one loaded base model, mixed row by row in one batch.

How: each linear layer that some adapter targets gets a forward hook that adds
`((x @ A_all.T) * mask) @ B_all.T` to its output. `A_all` and `B_all` hold every
loaded adapter's low-rank matrices side by side (adapter i owns columns
`start_i .. start_i + rank_i`; an adapter that does not target this layer owns
zeros there, and each layer's scale is folded into its `B`), and `mask` is a
`(tokens, columns)` 0/1 matrix that keeps, for each token, only the columns of
its row's adapter. One forward pass then serves base rows (mask all zero) and
rows of any adapters together, with two small matrix products per layer.

Why not peft's `adapter_names=[...]` mixed batches: peft wraps the model (our
lean runner refuses wrapped models), needs the names passed through every
forward call, and loops in Python over the distinct adapters of a batch, with
a gather per group. The concatenated form costs `n_adapters x rank` extra
columns per layer, which stays far below the base weight traffic for the
handful of adapters a server holds, and it works with any forward path that
calls the model's own `nn.Linear` modules (HF forward or `transformers_runner`).

Thread safety: the loaded set is an immutable `_Pack` swapped in one
assignment by `load`/`unload` (any thread); `select` and the hooks run on the
decode thread. Adapters keep their columns' meaning across swaps (slots are
never reused while a row may refer to them), so a forward that sees the old
pack in some layers and the new one in others still computes every live row
exactly: unloading waits until no sequence uses the adapter (`transformers_adapters`).

Not supported (refused with a clear error): DoRA, bias training,
`modules_to_save`, non-Linear targets, Conv1D layouts (`fan_in_fan_out`).
CUDA graphs: a graph replays whatever the hooks did when it was captured, so
while any adapter is loaded the lean runner steps eagerly through the modules
(see `transformers_runner`); base-only serving keeps its graphs.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ziggurat.errors import InvalidRequest

_PREFIX = "base_model.model."
_Hook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor | None]


@dataclass(slots=True, frozen=True)
class LoraWeights:
    """One adapter read from disk: per target module, `A (rank, in)` and scaled `B (out, rank)`."""

    rank: int
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(slots=True, frozen=True)
class _Pack:
    version: int
    slots: tuple[int, ...]
    owners: torch.Tensor | None
    """`(columns,)`: the slot owning each column (None when no adapter is loaded)."""
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]


def read_adapter(path: Path, model: nn.Module) -> LoraWeights:
    """Read a peft LoRA adapter directory and check it fits `model` (blocking; `InvalidRequest` if not)."""
    config = _read_config(path)
    tensors = _read_tensors(path)
    rank_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", rank_default))
    rank_pattern: dict[str, int] = config.get("rank_pattern") or {}
    alpha_pattern: dict[str, float] = config.get("alpha_pattern") or {}
    use_rslora = bool(config.get("use_rslora", False))
    device, dtype = _placement(model)
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, lora_a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight").removeprefix(_PREFIX)
        lora_b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        linear = _linear(model, name)
        if lora_b is None or lora_a.shape[1] != linear.in_features or lora_b.shape[0] != linear.out_features:
            raise InvalidRequest(
                f"The adapter's weights for '{name}' do not fit the base model.", param="path"
            )
        short = name.rsplit(".", 1)[-1]
        alpha = float(_pattern(alpha_pattern, name, short, alpha_default))
        expected_rank = int(_pattern(rank_pattern, name, short, rank_default))
        scale = alpha / math.sqrt(expected_rank) if use_rslora else alpha / expected_rank
        modules[name] = (
            lora_a.to(device=device, dtype=dtype).contiguous(),
            (lora_b.float() * scale).to(device=device, dtype=dtype).contiguous(),
        )
    if not modules:
        raise InvalidRequest("The adapter has no LoRA weights.", param="path")
    return LoraWeights(rank=max(a.shape[0] for a, _ in modules.values()), modules=modules)


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise InvalidRequest(
            f"'{path}' is not a peft adapter directory (no adapter_config.json).", param="path"
        )
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"The adapter's adapter_config.json cannot be read: {exc}", param="path"
        ) from exc
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidRequest("Only LoRA adapters are supported.", param="path")
    unsupported = [
        name
        for name, is_set in (
            ("use_dora", bool(config.get("use_dora"))),
            ("bias", config.get("bias", "none") != "none"),
            ("modules_to_save", bool(config.get("modules_to_save"))),
            ("fan_in_fan_out", bool(config.get("fan_in_fan_out"))),
        )
        if is_set
    ]
    if unsupported:
        raise InvalidRequest(f"Unsupported adapter options: {', '.join(unsupported)}.", param="path")
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    safetensors_file = path / "adapter_model.safetensors"
    bin_file = path / "adapter_model.bin"
    try:
        if safetensors_file.is_file():
            from safetensors.torch import load_file

            return load_file(str(safetensors_file))
        if bin_file.is_file():
            loaded: dict[str, torch.Tensor] = torch.load(bin_file, map_location="cpu", weights_only=True)
            return loaded
    except (OSError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(f"The adapter's weights cannot be read: {exc}", param="path") from exc
    raise InvalidRequest(f"'{path}' has no adapter_model.safetensors or adapter_model.bin.", param="path")


def _pattern(pattern: dict[str, Any], name: str, short: str, default: float) -> float:
    for key, value in pattern.items():
        if name == key or name.endswith(f".{key}") or short == key:
            return float(value)
    return default


def _linear(model: nn.Module, name: str) -> nn.Linear:
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise InvalidRequest(
            f"The base model has no module '{name}' for this adapter.", param="path"
        ) from exc
    if not isinstance(module, nn.Linear):
        raise InvalidRequest(f"The adapter targets '{name}', which is not a linear layer.", param="path")
    return module


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


class LoraSet:
    """The adapters live on one model, by slot number, and the per-token selection of the next forward."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._device, self._dtype = _placement(model)
        self._weights: dict[int, LoraWeights] = {}
        self._pack = _Pack(version=0, slots=(), owners=None, modules={})
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self._changes = threading.Lock()
        self._selection: torch.Tensor | None = None
        self._selection_version = 0
        self._mask: tuple[int, int, torch.Tensor] | None = None
        self._is_prefix = False

    @property
    def slots(self) -> tuple[int, ...]:
        return self._pack.slots

    def add(self, slot: int, weights: LoraWeights) -> None:
        with self._changes:
            self._weights[slot] = weights
            self._rebuild()

    def remove(self, slot: int) -> None:
        with self._changes:
            self._weights.pop(slot, None)
            self._rebuild()

    def select(self, slots: Sequence[int], tokens_per_row: Sequence[int] | None = None) -> None:
        """Which slot each row of the next forward uses (-1: base); `tokens_per_row` when rows are
        flattened into one token axis (chunked prefill). Called by the decode thread only."""
        self._selection_version += 1
        self._is_prefix = False
        if not self._pack.slots or all(slot < 0 for slot in slots):
            self._selection = None
            return
        selection = torch.tensor(list(slots), dtype=torch.long, device=self._device)
        if tokens_per_row is not None:
            counts = torch.tensor(list(tokens_per_row), dtype=torch.long, device=self._device)
            selection = selection.repeat_interleave(counts)
        self._selection = selection

    def select_by_row(self, slots: Sequence[int]) -> None:
        """Row i of the next forward uses `slots[i]`; a forward with fewer rows uses the prefix
        (the lean runner decodes a bucket of KV slots, row i being KV slot i)."""
        self.select(slots)
        self._is_prefix = True

    def _rebuild(self) -> None:
        slots = tuple(sorted(self._weights))
        names = sorted({name for weights in self._weights.values() for name in weights.modules})
        owners = [slot for slot in slots for _ in range(self._weights[slot].rank)]
        modules = {name: self._stack(name, slots) for name in names}
        owner_tensor = torch.tensor(owners, dtype=torch.long, device=self._device) if owners else None
        self._pack = _Pack(self._pack.version + 1, slots, owner_tensor, modules)
        for name in names:
            if name not in self._hooks:
                self._hooks[name] = self._model.get_submodule(name).register_forward_hook(self._hook(name))
        for name in [name for name in self._hooks if name not in modules]:
            self._hooks.pop(name).remove()

    def _stack(self, name: str, slots: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        linear = self._model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        a_parts: list[torch.Tensor] = []
        b_parts: list[torch.Tensor] = []
        for slot in slots:
            weights = self._weights[slot]
            lora_a, lora_b = weights.modules.get(name, (None, None))
            a = torch.zeros((weights.rank, linear.in_features), dtype=self._dtype, device=self._device)
            b = torch.zeros((linear.out_features, weights.rank), dtype=self._dtype, device=self._device)
            if lora_a is not None and lora_b is not None:
                a[: lora_a.shape[0]] = lora_a
                b[:, : lora_b.shape[1]] = lora_b
            a_parts.append(a)
            b_parts.append(b)
        return torch.cat(a_parts).contiguous(), torch.cat(b_parts, dim=1).contiguous()

    def _current_mask(self, pack: _Pack) -> torch.Tensor | None:
        selection = self._selection
        if selection is None or pack.owners is None:
            return None
        cached = self._mask
        if cached is not None and cached[0] == pack.version and cached[1] == self._selection_version:
            return cached[2]
        mask = (selection.unsqueeze(1) == pack.owners.unsqueeze(0)).to(self._dtype)
        self._mask = (pack.version, self._selection_version, mask)
        return mask

    def _hook(self, name: str) -> _Hook:
        def add_delta(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> torch.Tensor | None:
            pack = self._pack
            mask = self._current_mask(pack)
            weights = pack.modules.get(name)
            if mask is None or weights is None:
                return None
            lora_a, lora_b = weights
            if self._is_prefix:
                mask = mask[: inputs[0].shape[0]]
            hidden = inputs[0].reshape(-1, inputs[0].shape[-1])
            if hidden.shape[0] != mask.shape[0]:
                if hidden.shape[0] % mask.shape[0]:
                    raise RuntimeError("The LoRA selection does not match the forward pass's rows.")
                mask = mask.repeat_interleave(hidden.shape[0] // mask.shape[0], dim=0)
            delta = ((hidden.to(lora_a.dtype) @ lora_a.T) * mask) @ lora_b.T
            return output + delta.view(output.shape).to(output.dtype)

        return add_delta
