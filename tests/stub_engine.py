"""What every test engine shares: a fixed model, a fixed number of slots, always ready, nothing to open."""

from __future__ import annotations

from ziggurat.model.engine import ModelInfo


class StubEngine:
    """Subclasses set `_info` (and `slots` if 8 is wrong) and write `generate`."""

    slots = 8
    _info: ModelInfo

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def capacity(self) -> int:
        return self.slots

    @property
    def is_ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
