"""LoRA adapters as the layers above the model see them: names, the `AdapterHost` capability, model names.

A request picks an adapter through its model name, `base:adapter`. An engine
that can serve adapters implements `AdapterHost`; the admin API and the model
directory use only this module, so they never import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ziggurat.model.engine import ModelInfo

ADAPTER_SEPARATOR = ":"
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(slots=True, frozen=True)
class AdapterInfo:
    """One loaded adapter. `running`: generations using it now; `is_unloading`: refusing new ones."""

    name: str
    model: str
    """The name clients use: `base:adapter`."""
    path: str
    running: int = 0
    is_unloading: bool = False


def adapter_model_name(base: str, adapter: str) -> str:
    return f"{base}{ADAPTER_SEPARATOR}{adapter}"


def adapter_of(model: str, base: str) -> str | None:
    """The adapter named by `model` when it is `base:adapter`; None for the base itself or another model."""
    prefix = base + ADAPTER_SEPARATOR
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    return None


@runtime_checkable
class AdapterHost(Protocol):
    """An optional engine capability: LoRA adapters loaded and unloaded while it serves."""

    def adapters(self) -> list[AdapterInfo]: ...

    def served_models(self) -> list[ModelInfo]:
        """The base model and one entry per adapter (`base:adapter`), for `/v1/models`."""
        ...

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        """Load (or replace nothing: `Conflict` if the name is taken); `InvalidRequest` for a bad adapter."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Refuse new requests for it at once, wait until its running ones finish, then free it.

        `NotFound` if no such adapter is loaded.
        """
        ...
