"""The text of each cell of ``shmring top``'s tables, shared by the rich and
the plain view so that both say the same thing: headers, and rows of strings
made from a :class:`~.model.Frame`."""

from __future__ import annotations

import time

from ..readable import size
from .model import Frame, ProcessRow, RegionRow, RunRow, StageRow

REGION_HEADER = ["REGION", "PATTERN", "FILL", "MSG/S IN", "MSG/S OUT", "BYTES/S IN",
                 "BYTES/S OUT", "LAG", "PROCS"]
STAGE_HEADER = ["STAGE", "WORKERS", "BUSY", "ITEMS/S", "ITEMS", "OUT/S", "QUEUED",
                "REDELIVERED", "DEAD LETTERS"]
PROCESS_HEADER = ["PID", "COMMAND", "ROLES", "REGIONS", "WHAT", "SUPERVISOR"]


def count(n: float | None) -> str:
    """A rate or count in few characters: ``0``, ``950``, ``12.3k``, ``4.56M``."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return f"{n:.0f}" if n == int(n) or abs(n) >= 10 else f"{n:.1f}"


def per_second(n: float | None) -> str:
    """Bytes per second: ``12.0 MiB/s``."""
    return "-" if n is None else f"{size(round(n))}/s"


def percent(p: float | None) -> str:
    """``37%``, ``<1%`` for a little but not nothing, ``-`` if unknown."""
    if p is None:
        return "-"
    return "<1%" if 0 < p < 1 else f"{p:.0f}%"


def title(f: Frame, interval: float | None, *, keys: bool) -> str:
    """The first line: namespace, time, refresh interval."""
    when = time.strftime("%H:%M:%S", time.localtime(f.time))
    every = f"  every {interval:g} s" if interval else ""
    quits = "  (q quits)" if keys else ""
    return f"shmring top  namespace {f.namespace!r}  {when}{every}{quits}"


def supervisor_line(f: Frame) -> str:
    """What the supervisor is doing, in one line."""
    s = f.supervisor
    if not s.running:
        return "supervisor: " + (s.note or "not running")
    if not s.answered:
        return f"supervisor: pid {s.pid}, " + s.note
    parts = [f"supervisor: running, pid {s.pid}",
             f"{s.regions} regions tracked", f"{s.processes} processes watched",
             f"{s.connections} connected"]
    if s.in_grace:
        parts.append("in startup grace")
    for k in ("deaths", "recovered", "unlinked", "revoked"):
        if s.stats.get(k):
            parts.append(f"{k} {s.stats[k]}")
    if s.note:
        parts.append(s.note)
    return ", ".join(parts)


def attached(r: RegionRow) -> str:
    """``2p 3c`` (live producers and consumers), ``+1 dead`` if any slot's process is gone."""
    live = r.live
    p = sum(1 for a in live if a.role == "producer")
    c = sum(1 for a in live if a.role == "consumer")
    out = " ".join(x for x in (f"{p}p" if p else "", f"{c}c" if c else "") if x) or "0"
    dead = len(r.attached) - len(live)
    return out + (f" +{dead} dead" if dead else "")


def short_name(r: RegionRow) -> str:
    """A run's region without the run's prefix (the run's row says it)."""
    if r.run is not None:
        return "  " + r.name[len(r.run) + 1:]
    return r.name


def region_cells(r: RegionRow) -> list[str]:
    """One row of the regions table."""
    if r.state != "ok":
        return [short_name(r), f"({r.state})", "", "", "", "", "", "", ""]
    lag = "-"
    if r.lag is not None:
        lag = size(r.lag) + (f" ({r.lag_pid})" if r.lag else "")
        if r.missed:
            lag += f", missed {count(r.missed)}"
    return [short_name(r), (r.pattern or "?") + (" lossy" if r.lossy else ""),
            percent(r.fill_pct), count(r.in_per_s), count(r.out_per_s),
            per_second(r.bytes_in_per_s), per_second(r.bytes_out_per_s), lag, attached(r)]


def run_title(run: RunRow) -> str:
    """The line above a run's regions and stages."""
    parent = "" if run.parent_alive else ", parent gone"
    return f"pipeline {run.pipeline} (parent {run.pid}, run {run.run}{parent})"


def stage_cells(st: StageRow) -> list[str]:
    """One row of a run's stage table."""
    return [f"{st.index} {st.name}", str(st.workers), f"{st.busy}/{st.workers}",
            count(st.items_per_s), count(st.items), count(st.out_per_s), count(st.queued),
            count(st.redelivered), count(st.dead_letters)]


def process_cells(p: ProcessRow) -> list[str]:
    """One row of the processes table."""
    roles = " ".join(x for x in (f"{p.producer}p" if p.producer else "",
                                 f"{p.consumer}c" if p.consumer else "") if x) or "-"
    return [str(p.pid), p.command + ("" if p.alive else " (dead)"), roles,
            str(len(p.regions)), p.what, p.supervisor]
