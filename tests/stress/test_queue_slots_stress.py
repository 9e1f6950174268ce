"""The long run of thousands of processes on one queue (``-m stress``):
4,096 forked putters attached to one growing Queue at once, each in one
slot per region; the parent gets every item while they all wait. The
default run has 1,024 (multiprocess/test_queue_slots.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from slots_util import fork_putters, table_bytes_bound

PUTTERS = 4096


@pytest.mark.stress
def test_4096_forked_putters_at_once(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    q.put("parent")
    assert q.get(timeout=10) == "parent"
    seen = fork_putters(q, PUTTERS)
    assert sorted(seen.items) == list(range(PUTTERS))
    assert seen.alive == PUTTERS  # all attached at once
    assert seen.producers >= 1
    assert seen.most_slots == 1
    for high, allocated, capacity in seen.rings:
        assert allocated <= table_bytes_bound(high, capacity), (high, allocated, capacity)
    print(f"\n{PUTTERS} putters attached and drained in {seen.seconds:.1f} s; rings "
          f"(slot_high, allocated bytes, ring bytes): {seen.rings}; "
          f"live producers in them: {seen.producers}")
