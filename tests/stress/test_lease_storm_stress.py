"""The long run of the stop storm (``-m stress``): storm after storm with a
new seed each, over spsc, mpsc and mpmc, until a time budget is spent
(``SHMRING_STORM_BUDGET`` seconds, 90 by default, shared by the three
patterns). Each storm runs under its own supervisor environment; every one
checks that no message is lost, none is consumed twice, no send waited past
the lease (mpmc) or the stop (spsc, mpsc) plus a margin, and nothing hangs."""

from __future__ import annotations

import os
import time

import pytest
from lease_storm import storm
from supervisor_util import supervisor_env


@pytest.mark.stress
@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "mpmc"])
def test_stop_storm_many_seeds(monkeypatch: pytest.MonkeyPatch, uname: str,
                               tmp_path: object, pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90")) / 3
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
