"""A machine crash, simulated: a journal's files are copied at random
moments while a writer in another process appends and flushes, then pages
of the copy past the durable point are zeroed (at random, leaving holes)
or the tail file is cut at a page: the reopened copy is an exact prefix of
what was appended, at or beyond the last durable_seq flush() returned, with
no hole and no torn record."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_util import crash_trial

TRIALS = 6


@pytest.mark.parametrize("seed", range(TRIALS))
def test_crash_copy_reopens_to_a_durable_prefix(tmp_path: Path, seed: int) -> None:
    kept = crash_trial(str(tmp_path), seed)
    assert kept[-1] > 0
