"""Pipelines when things go wrong: a poison item that kills its worker every
time, an item that hangs past its timeout, a source faster than the last
stage, Ctrl-C in the parent, the parent SIGKILLed. Real processes, real
signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from pipeline_util import all_exit, gone, inc, kill_self_on, read_ahead

import shmring


@pytest.mark.parametrize("on_error", ["raise", "dead_letter"])
def test_a_poison_item_is_dead_lettered_after_its_attempts(pname: str, on_error: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(40)).map(kill_self_on, workers=2).map(inc)
    with p.run(on_error=on_error) as run:
        out = sorted(run)
    assert out == [x + 1 for x in range(40) if x != 13]
    assert run.dead_letters == [(13, "killed by SIGKILL")]
    s = run.stats["kill_self_on"]
    # max_redeliveries=2: three attempts killed a worker each; the fourth
    # taker gave it up without running it.
    assert (s["restarts"], s["redelivered"], s["dead_lettered"]) == (3, 3, 1)
    assert s["in"] == 40 and s["out"] == 39
    assert gone(pname)


def test_max_redeliveries_zero_gives_up_after_one_attempt(pname: str) -> None:
    p = shmring.Pipeline(pname)
    p.source(range(20)).map(kill_self_on, max_redeliveries=0)
    with p.run() as run:
        assert sorted(run) == [x for x in range(20) if x != 13]
    assert run.dead_letters == [(13, "killed by SIGKILL")]
    assert run.stats["kill_self_on"]["restarts"] == 1


def test_an_item_past_its_timeout_has_its_worker_killed(pname: str) -> None:
    def hang_on_5(x: int) -> int:
        if x == 5:
            time.sleep(3600)
        return x

    p = shmring.Pipeline(pname)
    p.source(range(30)).map(hang_on_5, workers=2, timeout=0.3, max_redeliveries=1)
    with p.run() as run:
        assert sorted(run) == [x for x in range(30) if x != 5]
    assert run.dead_letters == [(5, "timeout")]
    s = run.stats["hang_on_5"]
    assert s["restarts"] == 2 and s["dead_lettered"] == 1


def test_a_killed_worker_is_replaced_and_its_item_goes_on(pname: str) -> None:
    """Kill the worker that holds an item: another takes it, a new worker
    keeps the pool at its size, the item comes out once."""
    def slow(x: int) -> int:
        time.sleep(0.05)
        return x

    p = shmring.Pipeline(pname)
    p.source(range(20)).map(slow, workers=2)
    with p.run() as run:
        it = iter(run)
        time.sleep(0.12)
        before = run.pids("slow")
        assert len(before) == 2
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        out = list(it)
        after = run.stats["slow"]
    assert sorted(out) == list(range(20))
    assert after["restarts"] == 2 and after["redelivered"] >= 1


def test_backpressure_bounds_how_far_the_source_is_read(pname: str) -> None:
    ahead = read_ahead(pname, lambda s: s.map(inc, workers=2, max_inflight=8)
                       .map(inc, max_bytes=4096))
    # Bounded by the edges (8 items into the first stage, a 4 KiB ring into
    # the second, the output ring), each worker's item and one batch of
    # outputs the loop took out of the ring (64), never growing.
    assert max(ahead) < 200 + 64, ahead
    assert ahead[-1] <= max(ahead[:5]) + 50, ahead


SCRIPT = textwrap.dedent("""
    import itertools, sys
    import shmring
    p = shmring.Pipeline(sys.argv[1])
    p.source(itertools.count()).map(abs, workers=2).map(abs, workers=2)
    with p.run() as run:
        it = iter(run)
        next(it)
        pids = run.pids("abs") + run.pids("abs-2")
        print(" ".join(map(str, pids)), flush=True)
        for _ in it:
            pass
""")


# The parent never reads: every edge fills, and workers wait on full rings
# (a backlog of records in a 4 KiB edge behind them) or on max_inflight.
STUCK = textwrap.dedent("""
    import itertools, sys, time
    import shmring
    p = shmring.Pipeline(sys.argv[1])
    s = p.source(itertools.count()).map(abs, workers=2)
    if sys.argv[2] == "inflight":
        s.map(abs, workers=2, max_inflight=2)
    else:
        s.map(abs, workers=2, max_bytes=4096)
    with p.run() as run:
        time.sleep(0.5)
        pids = run.pids("abs") + run.pids("abs-2")
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(3600)
""")


def start_script(pname: str, script: str = SCRIPT,
                 *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    child = subprocess.Popen([sys.executable, "-c", script, pname, *args],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, child.stderr.read() if child.stderr else ""
    pids = [int(x) for x in line.split()]
    assert len(pids) == 4
    return child, pids


def test_ctrl_c_stops_every_stage(pname: str) -> None:
    child, pids = start_script(pname)
    time.sleep(0.2)
    t0 = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        _, err = child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()  # never left running (its workers follow it): fail, not slow the rest
        child.communicate()
        raise
    took = time.monotonic() - t0
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert took < 3, f"Ctrl-C took {took:.1f} s"
    assert all_exit(pids, 1)
    assert err.count("Traceback") == 1, err  # the parent's; workers say nothing
    assert gone(pname)


@pytest.mark.parametrize("script", [(SCRIPT,), (STUCK, "ring"), (STUCK, "inflight")],
                         ids=["reading", "full-ring", "full-inflight"])
def test_workers_leave_when_the_parent_is_killed(pname: str, script: tuple[str, ...]) -> None:
    child, pids = start_script(pname, *script)
    time.sleep(0.2)
    child.kill()
    child.wait(10)
    assert all_exit(pids, 5), "workers outlived their pipeline's parent"
    assert gone(pname)
