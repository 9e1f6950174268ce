"""Seeded SIGKILL storms over the workers of every stage (bounded here; the
long run is tests/stress/test_pipeline_storm_stress.py): 0 items lost, 0
duplicated, 0 hangs, 0 segments left."""

from __future__ import annotations

import pytest
from pipeline_storm import TOPOLOGIES, storm

SEEDS = range(1, 9)


@pytest.mark.parametrize("chunksize", [1, 37], ids=["items", "chunks"])
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_storm(pname: str, topology: str, seed: int, ordered: bool,
                       chunksize: int) -> None:
    o = storm(pname, topology, seed, ordered=ordered, chunksize=chunksize,
              items=20000 if chunksize == 1 else 80000)
    assert (o.lost, o.duplicated, o.dead_letters) == (0, 0, 0), o
    if ordered:
        assert o.in_order, o
    assert o.kills > 0, o
