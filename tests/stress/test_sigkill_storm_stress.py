"""The long run of the SIGKILL storm (``-m stress``): storm after storm with
a new seed each, both multi-producer patterns, until a time budget
(``SHMRING_STORM_BUDGET`` seconds, 90 by default) is spent. Each storm runs
under its own supervisor environment."""

from __future__ import annotations

import os
import time

import pytest
from pattern_util import patterns
from storm_util import storm
from supervisor_util import supervisor_env


@pytest.mark.stress
@pytest.mark.parametrize("pattern", patterns(multi_producer=True))
def test_sigkill_storm_many_seeds(monkeypatch: pytest.MonkeyPatch, uname: str,
                                  tmp_path: object, pattern: str) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    end = time.monotonic() + budget
    seed = 0
    while time.monotonic() < end:
        seed += 1
        d = os.path.join(str(tmp_path), f"s{seed}")
        os.mkdir(d)
        with supervisor_env(monkeypatch) as e:
            storm(e, f"{uname}-{seed}", d, pattern, seed=seed, seconds=4.0)
