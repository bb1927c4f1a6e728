"""prometheus-client's Counter, Gauge and Histogram with their labelled children memoised.

`labels(...)` takes the metric's lock, converts every value to `str` and looks the
child up again on each call (~0.7 µs); a streamed request makes about a dozen such
calls. These subclasses keep the children they handed out in a plain dict keyed by
the values as given, so the next call with the same values is one dict lookup. The
label values are bounded (models, outcomes, route templates), so the memo is as large
as the metric's own set of children. `remove()` and `clear()` drop it, so a removed
child is never written to again.
"""

from __future__ import annotations

from typing import Any

import prometheus_client


class _MemoisedLabels:
    """Mixed in before a prometheus-client metric class (`labels` is looked up here first)."""

    _children_by_values: dict[tuple[Any, ...], Any]

    def labels(self, *values: Any, **by_name: Any) -> Any:
        if by_name:  # rare on our paths: the library's own lookup, no memo
            return super().labels(*values, **by_name)  # type: ignore[misc]
        memo = self.__dict__.get("_children_by_values")
        if memo is None:
            memo = self._children_by_values = {}
        child = memo.get(values)
        if child is None:
            child = memo[values] = super().labels(*values)  # type: ignore[misc]
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.pop("_children_by_values", None)
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.pop("_children_by_values", None)
        super().clear()  # type: ignore[misc]


class Counter(_MemoisedLabels, prometheus_client.Counter):
    pass


class Gauge(_MemoisedLabels, prometheus_client.Gauge):
    pass


class Histogram(_MemoisedLabels, prometheus_client.Histogram):
    pass
