"""Bounded in-process vector sets, searched by brute force with numpy.

A `VectorSet` holds one namespace's unit vectors, each under a key and a
16-byte context digest; `nearest` returns the most similar vector among those
with the same context. A matrix-vector product over a few thousand rows of
384 floats takes well under a millisecond, so there is no approximate index.
`VectorSets` keeps namespaces in least-recently-used order under a bound on
the total number of vectors, which is what bounds memory when every user has a
namespace of their own. Both are synchronous and hold no locks: they are used
from the event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ziggurat.errors import ConfigurationError

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as error:
    raise ConfigurationError("Semantic caching needs numpy: pip install 'ziggurat[semantic]'") from error

Vector = npt.NDArray[np.float32]
CONTEXT_BYTES = 16


@dataclass(slots=True, frozen=True)
class Neighbour:
    key: str
    similarity: float


def _context_row(context: bytes) -> npt.NDArray[np.uint64]:
    if len(context) != CONTEXT_BYTES:
        raise ValueError(f"a context digest is {CONTEXT_BYTES} bytes, not {len(context)}")
    return np.frombuffer(context, dtype=np.uint64)


class VectorSet:
    """At most `max_entries` vectors of one dimension; once full, each new key overwrites the oldest slot.

    Capacity doubles as it fills, so a namespace of one vector costs one row, not a preallocated block.

    Adding a key that is present replaces its vector in place. A discarded slot stays empty until the
    rotation reaches it again.
    """

    def __init__(self, *, max_entries: int, dimensions: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._dimensions = dimensions
        self._matrix = np.zeros((0, dimensions), dtype=np.float32)
        self._contexts = np.zeros((0, 2), dtype=np.uint64)
        self._occupied = np.zeros(0, dtype=np.bool_)
        self._keys: list[str | None] = []
        self._slots: dict[str, int] = {}
        self._oldest = 0

    @classmethod
    def of(
        cls, keys: list[str], rows: npt.NDArray[np.uint8], *, max_entries: int, dimensions: int
    ) -> VectorSet:
        """A set filled at once from `rows` of context digest + float32 vector bytes (the last ones win)."""
        keys, rows = keys[-max_entries:], rows[-max_entries:]
        vectors = cls(max_entries=max_entries, dimensions=dimensions)
        vectors._grow(len(keys))
        count = len(keys)
        vectors._contexts[:count] = rows[:, :CONTEXT_BYTES].copy().view(np.uint64)
        vectors._matrix[:count] = rows[:, CONTEXT_BYTES:].copy().view(np.float32)
        vectors._occupied[:count] = True
        vectors._keys = list(keys)
        vectors._slots = {key: slot for slot, key in enumerate(keys)}
        return vectors

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def add(self, key: str, context: bytes, vector: Vector) -> None:
        if vector.shape != (self._dimensions,):
            raise ValueError(f"expected a vector of {self._dimensions} values, got shape {vector.shape}")
        row = _context_row(context)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._take_slot()
            self._keys[slot] = key
            self._slots[key] = slot
        self._matrix[slot] = vector
        self._contexts[slot] = row
        self._occupied[slot] = True

    def _take_slot(self) -> int:
        used = len(self._keys)
        if used < self._max_entries:
            if used == self._matrix.shape[0]:
                self._grow(min(self._max_entries, max(1, 2 * used)))
            self._keys.append(None)
            return used
        slot = self._oldest
        self._oldest = (slot + 1) % self._max_entries
        evicted = self._keys[slot]
        if evicted is not None:
            del self._slots[evicted]
        return slot

    def _grow(self, capacity: int) -> None:
        used = len(self._keys)
        matrix = np.zeros((capacity, self._dimensions), dtype=np.float32)
        matrix[:used] = self._matrix[:used]
        contexts = np.zeros((capacity, 2), dtype=np.uint64)
        contexts[:used] = self._contexts[:used]
        occupied = np.zeros(capacity, dtype=np.bool_)
        occupied[:used] = self._occupied[:used]
        self._matrix, self._contexts, self._occupied = matrix, contexts, occupied

    def discard(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._keys[slot] = None
            self._occupied[slot] = False

    def nearest(self, context: bytes, vector: Vector) -> Neighbour | None:
        used = len(self._keys)
        if used == 0 or vector.shape != (self._dimensions,):
            return None
        is_candidate = self._occupied[:used] & (self._contexts[:used] == _context_row(context)).all(axis=1)
        if not is_candidate.any():
            return None
        similarities = np.where(is_candidate, self._matrix[:used] @ vector, -np.inf)
        best = int(np.argmax(similarities))
        key = self._keys[best]
        if key is None:
            return None
        return Neighbour(key=key, similarity=float(similarities[best]))


class VectorSets:
    """Namespaces of `VectorSet`s, least recently used dropped first once they hold `max_total_entries`."""

    def __init__(self, *, max_entries: int, max_total_entries: int) -> None:
        self._max_entries = min(max_entries, max_total_entries)
        self._max_total_entries = max_total_entries
        self._namespaces: OrderedDict[str, VectorSet] = OrderedDict()
        self._total = 0

    @property
    def max_entries(self) -> int:
        """The bound on one namespace."""
        return self._max_entries

    @property
    def total(self) -> int:
        """Vectors held across all namespaces."""
        return self._total

    def __len__(self) -> int:
        return len(self._namespaces)

    def __contains__(self, namespace: str) -> bool:
        return namespace in self._namespaces

    def get(self, namespace: str) -> VectorSet | None:
        vectors = self._namespaces.get(namespace)
        if vectors is not None:
            self._namespaces.move_to_end(namespace)
        return vectors

    def new_set(self, dimensions: int) -> VectorSet:
        """An empty set with this collection's per-namespace bound, to fill and then `replace`."""
        return VectorSet(max_entries=self._max_entries, dimensions=dimensions)

    def add(self, namespace: str, key: str, context: bytes, vector: Vector) -> None:
        vectors = self.get(namespace)
        if vectors is None or vectors.dimensions != vector.shape[0]:
            vectors = self.new_set(vector.shape[0])
            self.replace(namespace, vectors)
        before = len(vectors)
        vectors.add(key, context, vector)
        self._total += len(vectors) - before
        self._shrink()

    def replace(self, namespace: str, vectors: VectorSet) -> None:
        previous = self._namespaces.pop(namespace, None)
        if previous is not None:
            self._total -= len(previous)
        self._namespaces[namespace] = vectors
        self._total += len(vectors)
        self._shrink()

    def discard(self, namespace: str, key: str) -> None:
        vectors = self._namespaces.get(namespace)
        if vectors is not None:
            before = len(vectors)
            vectors.discard(key)
            self._total -= before - len(vectors)

    def drop(self, namespace: str) -> None:
        vectors = self._namespaces.pop(namespace, None)
        if vectors is not None:
            self._total -= len(vectors)

    def _shrink(self) -> None:
        # The newest namespace is never dropped: on its own it holds at most max_entries <= the total.
        while self._total > self._max_total_entries and len(self._namespaces) > 1:
            _, dropped = self._namespaces.popitem(last=False)
            self._total -= len(dropped)
