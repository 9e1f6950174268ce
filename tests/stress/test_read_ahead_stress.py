"""The long run of the read-ahead SIGKILL storm (``-m stress``): storm after
storm on an mpmc channel with a new seed each, until a time budget
(``SHMRING_STORM_BUDGET`` seconds, 90 by default) is spent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import read_ahead_util
from pipeline_storm import budget_seeds

import shmring


@pytest.mark.stress
def test_read_ahead_storm_many_seeds(make_channel: Callable[..., shmring.Channel], uname: str,
                                     tmp_path: Path) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    runs = unknown = 0
    for seed in budget_seeds(budget):
        ch = make_channel("mpmc", 1 << (14 + seed % 5), name=f"{uname}-{seed}",
                          supervised=False)
        o = read_ahead_util.storm(ch, f"{uname}-{seed}", tmp_path, seed=seed, total=20000,
                                  rounds=40)
        ch.close()
        ch.unlink()
        runs += 1
        unknown += o.unknown
    assert runs
    print(f"{runs} storms of 40 SIGKILLs each, nothing lost or repeated "
          f"({unknown} records in a settle cut short)")
