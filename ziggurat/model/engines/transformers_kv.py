"""The preallocated slot KV cache of the lean runner, sized from a memory budget.

One tensor holds every layer's keys and values: `[layers, 2, slots, kv_heads,
max_len + 1, head_dim]`. A sequence owns one slot for its whole life, so its
keys never move and a decode step can read the first `B` slots as plain views
(which is what lets a CUDA graph be replayed with the same addresses every
step). The extra last position of each slot is a scratch column: rows of a
decode step that are not decoding (free slots, sequences still prefilling)
write their throw-away keys there.

Admission is by slot: a slot holds `max_len` tokens, and the engine clips
`max_tokens` to `max_len - prompt`, so an admitted sequence can never run out
of room (no preemption needed). The budget decides how many slots exist:
`slots = min(max_batch_size, budget // bytes_per_slot)`. A paged cache would
let short sequences use less memory, at the price of a gather in attention.
"""

from __future__ import annotations

import heapq

import torch

from ziggurat.errors import ConfigurationError

GIB = 1024**3
CPU_DEFAULT_BUDGET = 2 * GIB
"""Without a configured budget on CPU: enough for small models, harmless for big ones."""
CUDA_FREE_SHARE = 0.6
"""Without a configured budget on CUDA: this share of the memory free after loading the weights
(the rest is left for activations, logits, CUDA graphs and the allocator's slack)."""


def bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * layers * kv_heads * head_dim * dtype.itemsize


def default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return CPU_DEFAULT_BUDGET


def plan_slots(*, token_bytes: int, max_slots: int, max_len: int, budget_bytes: int) -> int:
    """How many slots of `max_len` tokens fit the budget (at most `max_slots`)."""
    per_slot = token_bytes * (max_len + 1)
    slots = min(max_slots, budget_bytes // per_slot)
    if slots < 1:
        raise ConfigurationError(
            f"The KV-cache budget ({budget_bytes / GIB:.2f} GiB) does not hold one sequence of "
            f"{max_len} tokens ({per_slot / GIB:.2f} GiB): raise engine.kv_cache_gib or lower "
            "engine.context_length."
        )
    return int(slots)


class SlotKVCache:
    """Keys and values of `slots` sequences of up to `max_len` tokens, plus who holds which slot."""

    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        slots: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.slots = slots
        self.max_len = max_len
        # Zeros, not empty: masked-out keys still meet a zero probability in attention, and
        # 0 x NaN from uninitialised memory would poison the row.
        self.data = torch.zeros(
            (layers, 2, slots, kv_heads, max_len + 1, head_dim), dtype=dtype, device=device
        )
        self.lengths = [0] * slots
        self._free = list(range(slots))
        self._used: set[int] = set()

    @property
    def scratch(self) -> int:
        """The position that rows without a real token write to."""
        return self.max_len

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def highest_used(self) -> int:
        """One past the highest slot in use (0 when none is)."""
        return max(self._used) + 1 if self._used else 0

    @property
    def used_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def usage(self) -> float:
        return self.used_tokens / (self.slots * self.max_len)

    def allocate(self) -> int:
        """The lowest free slot: keeping slots low keeps decode batches (and their graphs) small."""
        slot = heapq.heappop(self._free)
        self.lengths[slot] = 0
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0
        self._used.discard(slot)
        heapq.heappush(self._free, slot)

    def keys(self, layer: int) -> torch.Tensor:
        return self.data[layer, 0]

    def values(self, layer: int) -> torch.Tensor:
        return self.data[layer, 1]
