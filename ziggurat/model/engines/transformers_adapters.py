"""The adapters of one transformers engine over time: load, serve, drain, unload, without a restart.

`AdapterManager` lives on the engine's event loop. It hands each generation
the slot of its adapter (`acquire` / `release`), counts the generations that
use each adapter, and unloads one in two steps: new requests for it are
refused at once (`ModelNotFound`, a 404), and its weights leave the model only
after its last running generation has ended, so no stream is cut. Reading
weights and rebuilding the packed matrices (`transformers_lora.LoraSet`) run in
a worker thread, off the event loop; the decode thread keeps decoding meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ziggurat.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    UpstreamFailed,
)
from ziggurat.model.adapters import ADAPTER_NAME, AdapterInfo, adapter_model_name, adapter_of
from ziggurat.model.engine import ModelInfo
from ziggurat.model.engines.transformers_lora import LoraSet, read_adapter


@dataclass(slots=True)
class _Entry:
    slot: int
    path: str
    running: int = 0
    is_unloading: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class AdapterManager:
    """Named adapters of one base model; every method runs on the engine's event loop."""

    def __init__(self, lora: LoraSet, model: nn.Module, base_name: str) -> None:
        self._lora = lora
        self._model = model
        self._base_name = base_name
        self._entries: dict[str, _Entry] = {}
        self._loading: set[str] = set()
        self._next_slot = 0

    def adapters(self) -> list[AdapterInfo]:
        return [self._info(name, entry) for name, entry in sorted(self._entries.items())]

    async def load(self, name: str, path: str) -> AdapterInfo:
        if not ADAPTER_NAME.fullmatch(name):
            raise InvalidRequest(
                "An adapter name is 1-64 letters, digits, '.', '_' or '-' and starts with a letter or digit.",
                param="name",
            )
        if name in self._entries or name in self._loading:
            raise Conflict(f"An adapter named '{name}' is already loaded; unload it first.", param="name")
        directory = Path(path)
        if not directory.is_absolute():
            raise InvalidRequest("The adapter path must be an absolute path on the worker.", param="path")
        if not await asyncio.to_thread(directory.is_dir):
            raise InvalidRequest(f"No adapter directory at '{path}'.", param="path")
        self._loading.add(name)
        try:
            weights = await asyncio.to_thread(read_adapter, directory, self._model)
            slot = self._next_slot
            self._next_slot += 1
            await asyncio.to_thread(self._lora.add, slot, weights)
        finally:
            self._loading.discard(name)
        entry = _Entry(slot=slot, path=str(directory))
        entry.idle.set()
        self._entries[name] = entry
        return self._info(name, entry)

    async def unload(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None or entry.is_unloading:
            raise NotFound(f"No adapter named '{name}' is loaded.", param="name")
        entry.is_unloading = True
        await entry.idle.wait()
        del self._entries[name]
        await asyncio.to_thread(self._lora.remove, entry.slot)

    def acquire(self, name: str) -> int:
        """The slot a new generation for adapter `name` decodes with; `ModelNotFound` if not served."""
        entry = self._entries.get(name)
        if entry is None or entry.is_unloading:
            model = adapter_model_name(self._base_name, name)
            raise ModelNotFound(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        entry.running += 1
        entry.idle.clear()
        return entry.slot

    def release(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.running -= 1
        if entry.running == 0:
            entry.idle.set()

    def _info(self, name: str, entry: _Entry) -> AdapterInfo:
        return AdapterInfo(
            name=name,
            model=adapter_model_name(self._base_name, name),
            path=entry.path,
            running=entry.running,
            is_unloading=entry.is_unloading,
        )


class AdapterServing:
    """The `AdapterHost` side of `TransformersEngine`, kept here so the engine module stays about serving.

    The engine sets `_served_name` and calls `_start_adapters` once its model and
    batcher exist; before that, adapter calls answer as if none were loaded.
    """

    _served_name: str
    _adapters: AdapterManager | None = None

    @property
    def info(self) -> ModelInfo:
        raise NotImplementedError

    async def _start_adapters(self, model: nn.Module, batcher: object, startup: Mapping[str, str]) -> None:
        """Hook the LoRA set into the model and the batcher, then load the configured adapters."""
        lora = LoraSet(model)
        # Each batcher selects the rows' adapters right before each forward pass it runs.
        setattr(batcher, "lora", lora)  # noqa: B010
        self._adapters = AdapterManager(lora, model, self._served_name)
        for name, path in startup.items():
            try:
                await self._adapters.load(name, path)
            except (InvalidRequest, Conflict) as exc:
                raise ConfigurationError(f"The adapter '{name}' cannot be loaded: {exc.message}") from exc

    def adapters(self) -> list[AdapterInfo]:
        return self._adapters.adapters() if self._adapters is not None else []

    def served_models(self) -> list[ModelInfo]:
        base = self.info
        entries = [base]
        for adapter in self.adapters():
            if not adapter.is_unloading:
                description = f"LoRA adapter '{adapter.name}' on {base.name}"
                entries.append(
                    dataclasses.replace(
                        base, name=adapter.model, description=description, base_model=base.name
                    )
                )
        return entries

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        if self._adapters is None:
            raise UpstreamFailed("The transformers engine is not running.")
        return await self._adapters.load(name, path)

    async def unload_adapter(self, name: str) -> None:
        if self._adapters is None:
            raise NotFound(f"No adapter named '{name}' is loaded.", param="name")
        await self._adapters.unload(name)

    def _adapter_slot(self, model: str) -> int:
        """The LoRA slot a request for `model` decodes with (-1: the base); `ModelNotFound` if unknown."""
        adapter = adapter_of(model, self._served_name)
        if adapter is None:
            return -1
        if self._adapters is None:
            raise ModelNotFound(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        return self._adapters.acquire(adapter)

    def _release_adapter(self, model: str) -> None:
        adapter = adapter_of(model, self._served_name)
        if adapter is not None and self._adapters is not None:
            self._adapters.release(adapter)
