"""Outputs in source order (``ordered=True``): the parent puts each item's
outputs back in place before it yields them.

An item is known by its key, ``(source id,) + path``. In an ordered run
every item leaves a trace at the end of the pipeline: a value, a tombstone
(it was filtered out, skipped or failed), or, for an item a flat_map turned
into n outputs, an END saying n. A key is complete once it has a value or a
tombstone, or an END with n complete children; a source item once its key
is complete, and then its values are yielded in key order, source item by
source item.
"""

from __future__ import annotations

from typing import Any

Key = tuple[int, ...]


class Reorderer:
    """Collects outputs in any order; :meth:`ready` hands them back in
    source order as soon as each source item is complete."""

    def __init__(self) -> None:
        self._next = 0  # the next source item to yield
        self._values: dict[int, list[tuple[Key, Any]]] = {}
        self._expected: dict[Key, int] = {}  # END counts
        self._done: dict[Key, int] = {}  # complete children so far
        self._complete: set[int] = set()  # source items complete, not yet yielded

    def value(self, key: Key, obj: Any) -> None:
        """An output."""
        self._values.setdefault(key[0], []).append((key, obj))
        self._leaf(key)

    def tombstone(self, key: Key) -> None:
        """An item that produced nothing."""
        self._leaf(key)

    def end(self, key: Key, n: int) -> None:
        """The item at ``key`` produced ``n`` children (keys ``key + (k,)``)."""
        self._expected[key] = n
        if self._done.get(key, 0) >= n:
            self._leaf(key)

    def _leaf(self, key: Key) -> None:
        while True:
            self._expected.pop(key, None)
            self._done.pop(key, None)
            if len(key) == 1:
                self._complete.add(key[0])
                return
            parent = key[:-1]
            n = self._done.get(parent, 0) + 1
            self._done[parent] = n
            if self._expected.get(parent, -1) != n:
                return
            key = parent

    def ready(self) -> list[Any]:
        """Every value now yieldable in order (maybe none)."""
        out: list[Any] = []
        while self._next in self._complete:
            self._complete.discard(self._next)
            vals = self._values.pop(self._next, [])
            vals.sort(key=lambda kv: kv[0])
            out.extend(v for _, v in vals)
            self._next += 1
        return out

    @property
    def pending(self) -> int:
        """Source items seen and not yet yielded."""
        return len(self._values) + len(self._complete)
