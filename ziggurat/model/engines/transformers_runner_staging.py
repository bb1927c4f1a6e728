"""Pinned host buffers that carry a decode step's inputs to the GPU and its chosen tokens back.

Why: a step used to build two new CPU tensors for its token ids and positions
and copy them from pageable memory, then wait on `tokens.tolist()`. With the
decode loop's overlap (`DecodeLoop`, greedy rows) the next step is launched
before the host has read the previous step's tokens, so both directions must
be asynchronous: inputs are written into preallocated page-locked buffers and
copied with `non_blocking`, the chosen tokens are copied back into another one
and an event says when they have landed. Two sets of each are used in turn, and
an event guards every reuse, so a buffer is never rewritten while a copy from it
may still be queued. On CPU the same code runs with plain tensors and no events.
"""

from __future__ import annotations

import numpy
import torch


class StagingInputs:
    """One set of input buffers: token ids and positions, as tensors and as numpy views of them."""

    def __init__(self, size: int, pinned: bool) -> None:
        self.tokens_tensor = torch.zeros(size, dtype=torch.long, pin_memory=pinned)
        self.positions_tensor = torch.zeros(size, dtype=torch.long, pin_memory=pinned)
        # numpy views: writing a few Python ints through them allocates no tensor.
        self.tokens: numpy.ndarray = self.tokens_tensor.numpy()
        self.positions: numpy.ndarray = self.positions_tensor.numpy()
        self._copied: torch.cuda.Event | None = torch.cuda.Event() if pinned else None  # type: ignore[no-untyped-call]

    def queued(self) -> None:
        """Called after the copies from this set are queued: marks when they will have run."""
        if self._copied is not None:
            self._copied.record()

    def wait_free(self) -> None:
        if self._copied is not None:
            self._copied.synchronize()


class StagedTokens:
    """Tokens chosen on the device, on their way to the host."""

    def __init__(self, buffer: torch.Tensor, count: int, landed: torch.cuda.Event | None) -> None:
        self._buffer = buffer
        self._count = count
        self._landed = landed

    @property
    def count(self) -> int:
        return self._count

    def tokens(self) -> list[int]:
        """The tokens; waits for their copy (and so for the step that chose them)."""
        if self._landed is not None:
            self._landed.synchronize()
        values: list[int] = self._buffer[: self._count].tolist()
        return values


class HostStaging:
    """Double-buffered staging between the host and the runner's device-side step inputs."""

    def __init__(self, size: int, device: torch.device) -> None:
        self._pinned = device.type == "cuda"
        self._inputs = [StagingInputs(size, self._pinned) for _ in range(2)]
        self._outputs = [torch.zeros(size, dtype=torch.long, pin_memory=self._pinned) for _ in range(2)]
        self._landed = [torch.cuda.Event() if self._pinned else None for _ in range(2)]  # type: ignore[no-untyped-call]
        self._input_turn = 0
        self._output_turn = 0

    def next(self) -> StagingInputs:
        """The input set for the next step, once any copy queued from it earlier has run; the
        caller writes it, queues its copies and then calls its `queued`."""
        inputs = self._inputs[self._input_turn]
        self._input_turn ^= 1
        inputs.wait_free()
        return inputs

    def stage(self, chosen: torch.Tensor) -> StagedTokens:
        """Queue the copy of `chosen` (a 1-D device tensor of token ids) to the host."""
        turn = self._output_turn
        self._output_turn ^= 1
        buffer = self._outputs[turn]
        count = int(chosen.shape[0])
        buffer[:count].copy_(chosen, non_blocking=self._pinned)
        landed = self._landed[turn]
        if landed is not None:
            landed.record()
        return StagedTokens(buffer, count, landed)
