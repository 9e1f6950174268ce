"""The long runs of the journal's crash tests (``-m stress``): SIGKILLed
writers and crash-copied journals, trial after trial with a new seed each,
until a time budget (``SHMRING_STORM_BUDGET`` seconds, 90 by default) is
spent. The seeds start above the default run's."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from journal_util import crash_trial, kill_trial


@pytest.mark.stress
@pytest.mark.parametrize("trial", [kill_trial, crash_trial], ids=["sigkill", "crash_copy"])
def test_journal_trials_until_the_budget(tmp_path: Path, trial: object) -> None:
    budget = float(os.environ.get("SHMRING_STORM_BUDGET", "90"))
    end = time.monotonic() + budget / 2
    seed = 1000
    while time.monotonic() < end:
        seed += 1
        d = tmp_path / f"s{seed}"
        d.mkdir()
        trial(str(d), seed)  # type: ignore[operator]
        shutil.rmtree(d)
    assert seed > 1000
