"""Who hands back a dead worker's item, and who is there to take it: the
run's parent recovers what a worker it reaps held (the supervisor may be
slow, or not running), and a stage's workers stay while a record of their
input is still taken, so the stage is never left without a worker when that
record comes back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pipeline_util import gone
from supervisor_util import wait_for

import shmring


def _holder(held: Path) -> object:
    """A stage function that holds item 9 for ever the first time (its
    worker's pid in ``held``) and doubles every item."""
    def hold_the_last(x: int) -> int:
        if x == 9 and not held.exists():
            held.write_text(str(os.getpid()))
            time.sleep(3600)
        return x * 2
    return hold_the_last


def test_workers_stay_while_an_item_of_their_input_is_held(pname: str,
                                                           tmp_path: Path) -> None:
    held = tmp_path / "held"
    p = shmring.Pipeline(pname)
    p.source(range(10)).map(_holder(held), workers=3)  # type: ignore[arg-type]
    with p.run() as run:
        wait_for(held.exists, what="a worker to hold the last item")
        # Items 0..8 are out and the input is closed: nothing is left to take.
        wait_for(lambda: run.stats["hold_the_last"]["out"] == 9, what="the other items")
        time.sleep(0.5)
        assert len(run.pids("hold_the_last")) == 3  # none left at end of stream
        os.kill(int(held.read_text()), signal.SIGKILL)
        out = run.wait(timeout=30)
    assert sorted(out) == [x * 2 for x in range(10)]
    s = run.stats["hold_the_last"]
    assert (s["redelivered"], s["restarts"]) == (1, 1)
    assert gone(pname)


def test_a_run_without_a_supervisor_recovers_a_killed_worker(
        pname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHMRING_SUPERVISOR", "0")  # nobody else recovers anything
    held = tmp_path / "held"
    p = shmring.Pipeline(pname)
    p.source(range(10)).map(_holder(held), workers=2).map(abs, workers=2)
    with p.run() as run:
        wait_for(held.exists, what="a worker to hold the last item")
        os.kill(int(held.read_text()), signal.SIGKILL)
        out = run.wait(timeout=30)
    assert sorted(out) == [x * 2 for x in range(10)]
    assert run.stats["hold_the_last"]["redelivered"] == 1
    assert gone(pname)
