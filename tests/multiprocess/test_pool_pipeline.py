"""The two pipeline pieces a Pool stands on, tested on a bare run: a
stage's ``max_tasks`` (workers retire after that many items and are
replaced, without counting deaths, also once the input is closed) and the
run's ``on_dead`` callback (called once per item given up, with its id)."""

from __future__ import annotations

import os
import threading
from typing import Any

from pipeline_util import kill_self_on, segments_of

from shmring._pipeline.run import Run
from shmring._pipeline.stage import StageSpec


def pid_and(x: int) -> tuple[int, int]:
    """(x, the worker's pid)."""
    return x, os.getpid()


def test_max_tasks_retires_and_replaces_workers(pname: str) -> None:
    spec = StageSpec("map", pid_and, "m", workers=2, max_tasks=3)
    spec.check()
    run = Run(f"{pname}.{os.getpid()}.1", "fork", None, range(40), [spec], "raise", False)
    with run:
        out = sorted(run)
        stats = run.stats["m"]
    assert [x for x, _ in out] == list(range(40))
    per_pid: dict[int, int] = {}
    for _, pid in out:
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert max(per_pid.values()) <= 3 and len(per_pid) >= 14
    assert stats["restarts"] == 0
    assert segments_of(pname) == []


def test_on_dead_names_each_given_up_item(pname: str) -> None:
    dead: list[tuple[int, Any, bool, str]] = []
    lock = threading.Lock()

    def on_dead(item: int, value: Any, killed: bool, reason: str) -> None:
        with lock:
            dead.append((item, value, killed, reason))

    spec = StageSpec("map", kill_self_on, "m", workers=2, max_redeliveries=1)
    run = Run(f"{pname}.{os.getpid()}.1", "fork", None, range(30), [spec], "dead_letter",
              False, on_dead=on_dead)
    with run:
        out = sorted(run)
    assert out == [x for x in range(30) if x != 13]
    assert dead == [(13, 13, True, "killed by SIGKILL")]
    assert run.stats["m"]["restarts"] == 2
