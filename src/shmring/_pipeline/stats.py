"""What the parent knows of each stage while it runs (:class:`StageRun`),
and the numbers ``run.stats`` and ``progress=True`` show."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from .._channel.channel import Channel
from . import board as B
from .stage import StageSpec


@dataclass(eq=False)
class StageRun:
    """A stage of a running pipeline: its spec, input edge and workers."""

    spec: StageSpec
    index: int
    channel: Channel  # the edge into the stage
    procs: dict[int, BaseProcess] = field(default_factory=dict)  # board entry -> worker
    target: int = 0
    eos: bool = False  # its input edge was closed for sending
    closed: bool = False  # ... and drained: the stage is done
    deaths: int = 0
    timed_out: set[int] = field(default_factory=set)
    totals: list[int] = field(default_factory=lambda: [0] * B.ENTRY)  # of gone workers

    def __post_init__(self) -> None:
        self.target = self.spec.workers

    def fold(self, words: list[int]) -> None:
        """Add a gone worker's counts to the stage's."""
        for i, v in enumerate(words):
            self.totals[i] += v


def stage_stats(st: StageRun, board: B.Board) -> dict[str, Any]:
    """The numbers of one stage, live workers and gone ones together."""
    live = list(st.procs)
    t = board.totals(live)
    for i, v in enumerate(st.totals):
        t[i] += v
    hist = t[B.HIST:B.HIST + B.BUCKETS]
    return {
        "in": t[B.FIRST],
        "out": t[B.OUT],
        "redelivered": t[B.AGAIN],
        "skipped": t[B.SKIPPED],
        "dead_lettered": t[B.DEAD],
        "errors": t[B.ERRORS],
        # A copy: the controller thread replaces workers meanwhile.
        "workers": sum(1 for p in list(st.procs.values()) if p.is_alive()),
        "busy": sum(1 for e in live if board.word(e, B.ITEM)),
        "restarts": st.deaths,
        "p50_s": B.quantile(hist, 0.50),
        "p99_s": B.quantile(hist, 0.99),
    }


def progress_line(stats: dict[str, dict[str, Any]], *, final: bool) -> None:
    """One line on stderr: each stage's items in and out (rewritten in place
    on a terminal)."""
    parts = [f"{name} {s['in']}>{s['out']} ({s['workers']}w)" for name, s in stats.items()]
    line = "  ".join(parts)
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line + ("\n" if final else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
