"""The long run of the stop storm (``-m stress``): storm after storm with a
new seed each, over spsc, mpsc and mpmc channels and over pipelines, until a
time budget is spent (``SHMRING_STORM_BUDGET`` seconds, 90 by default, a
quarter each). Each storm runs under its own supervisor environment; every
one checks that no message is lost, none is consumed twice (no output twice,
for pipelines), no send waited past the lease (mpmc) or the stop (spsc,
mpsc) plus a margin, and nothing hangs."""

from __future__ import annotations

import os
import time

import pytest
from lease_storm import pipeline_storm, storm
from supervisor_util import supervisor_env


@pytest.mark.stress
@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "mpmc"])
def test_stop_storm_many_seeds(monkeypatch: pytest.MonkeyPatch, uname: str,
                               tmp_path: object, pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90")) / 4
    end = time.monotonic() + budget
    seed = 0
    totals = {"stops": 0, "leases": 0, "revoked": 0}
    while seed == 0 or time.monotonic() < end:
        seed += 1
        d = os.path.join(str(tmp_path), f"s{seed}")
        os.mkdir(d)
        with supervisor_env(monkeypatch) as e:
            got = storm(e, f"{uname}-{seed}", d, pattern, seed=seed, seconds=4.0)
        for k, v in got.items():
            totals[k] += v
    print(f"{pattern}: {seed} storms, {totals}")
    assert totals["stops"] > 0
    if pattern == "mpmc":
        assert totals["leases"] > 0, "no lease was ever revoked: the storm tests nothing"
    else:
        assert totals["leases"] == 0  # one consumer: nobody to hand a record to


@pytest.mark.stress
def test_stop_storm_over_pipelines_many_seeds(monkeypatch: pytest.MonkeyPatch,
                                              pname: str) -> None:
    """Pipelines (every stage with a lease) with random workers stopped and
    continued: every output exactly once, every run ends."""
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90")) / 4
    end = time.monotonic() + budget
    seed = 0
    totals = {"stops": 0, "outputs": 0, "leases": 0}
    while seed == 0 or time.monotonic() < end:
        seed += 1
        with supervisor_env(monkeypatch) as e:
            got = pipeline_storm(e, f"{pname}-{seed}", seed=seed)
        for k, v in got.items():
            totals[k] += v
    print(f"pipelines: {seed} storms, {totals}")
    assert totals["stops"] > 0
    assert totals["leases"] > 0, "no lease was ever revoked: the storm tests nothing"
