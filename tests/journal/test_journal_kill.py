"""A writer SIGKILLed at random points (in append, in a claim, in a roll to
a new segment, in a flush): on reopen every record whose append returned is
there, whole and in order, and a new writer goes on after them. Seeded
trials, a bounded count here; stress/test_journal_stress.py runs more."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_util import kill_trial

TRIALS = 10


@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkilled_writer_loses_no_returned_append(tmp_path: Path, seed: int) -> None:
    assert kill_trial(str(tmp_path), seed) > 0
