"""A writer SIGKILLed at random points (in append, in a claim, in a roll to
a new segment, in a flush): on reopen every record whose append returned is
there, whole and in order, and a new writer goes on after them. Seeded
trials, a bounded count here; stress/test_journal_stress.py runs more."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from journal_util import check_prefix, read_all, start_writer

from shmring._journal import Journal

TRIALS = 6
MODES = ("append", "claim", "mixed")


def kill_trial(tmp: str, seed: int) -> int:
    """One trial: two writers in turn, each SIGKILLed at a random moment;
    returns how many records survived."""
    rng = random.Random(seed)
    path = os.path.join(tmp, f"j{seed}")
    Journal.create(path, segment_size=rng.choice((16 << 10, 64 << 10, 1 << 20))).close()
    acked = 0
    for _ in range(2):
        p, done, _ = start_writer(path, seed, rng.choice(MODES),
                                  sync=rng.choice(("none", "bytes:20000", "interval:2ms")))
        deadline = time.monotonic() + 30
        while done.value <= acked and time.monotonic() < deadline:
            time.sleep(0.001)  # the child's writer is up and appending
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        acked = done.value
        records = read_all(path)
        check_prefix(records, seed, acked)
        # At most the one record in flight when the kill came is there unacked.
        assert len(records) <= acked + 1
        acked = len(records)
    return acked


@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkilled_writer_loses_no_returned_append(tmp_path: Path, seed: int) -> None:
    assert kill_trial(str(tmp_path), seed) > 0
