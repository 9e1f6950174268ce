"""The long run of the pipeline SIGKILL storm (``-m stress``): storm after
storm with a new seed each, every topology, ordered and not, more items and
more kills, until a time budget (``SHMRING_STORM_BUDGET`` seconds, 90 by
default) is spent."""

from __future__ import annotations

import os

import pytest
from pipeline_storm import TOPOLOGIES, budget_seeds, storm


@pytest.mark.stress
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_pipeline_storm_many_seeds(pname: str, topology: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    runs = kills = 0
    for seed in budget_seeds(budget / len(TOPOLOGIES)):
        o = storm(f"{pname}-{seed}", topology, 1000 + seed, items=50000, kills=80,
                  ordered=bool(seed % 2), chunksize=1 if seed % 3 else 50)
        assert (o.lost, o.duplicated, o.dead_letters) == (0, 0, 0), (seed, o)
        if seed % 2:
            assert o.in_order, (seed, o)
        runs += 1
        kills += o.kills
    assert runs and kills
    print(f"{topology}: {runs} storms, {kills} SIGKILLs, nothing lost or repeated")
