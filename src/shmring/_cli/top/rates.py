"""From successive samples to frames: rates as counter differences over
the time between two samples, and the stage counts of pipeline runs.

Ring counters only grow (an endpoint that closes folds its counts into the
header), so a region's rate is its counters' difference over the time
between the two samples; a region created again under the same name is a
new one (its creation time differs) and has no rate until the next frame. A
difference below zero (a dead process's counts not folded yet) counts as
zero.

A pipeline worker's counts live in its board entry, which the run's parent
clears when it gives the entry to the next worker: what a gone worker did is
then only in the parent's memory. The :class:`Tracker` keeps the last counts
it saw of each entry and, when the entry changes hands, adds them to its
stage's total, so a stage's totals (and rates) stay monotonic across worker
deaths: they cover the workers seen since ``shmring top`` started (what a
worker did after the last frame before its death is not seen). A worker
belongs to the stage whose input edge it consumes (its slot in that edge's
attach table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import _layout as L
from ..._region.inventory import Snapshot
from .model import Attached, Frame, ProcessRow, RegionRow, RunRow, StageRow
from .sample import RUN_RE, Sample, WorkerWords, pid_exists

#: The stage counts kept per worker: the fields of WorkerWords added up.
COUNTS = ("first", "again", "out", "dead", "skipped", "errors")


@dataclass
class _Seen:
    pid: int
    stage: str | None
    counts: tuple[int, ...]


@dataclass
class _RunState:
    """What the tracker remembers of one run between frames."""

    entries: dict[int, _Seen] = field(default_factory=dict)  # board entry -> worker
    stage_of: dict[int, str] = field(default_factory=dict)  # worker pid -> stage
    gone: dict[str, list[int]] = field(default_factory=dict)  # stage -> folded counts
    last: dict[str, tuple[int, ...]] = field(default_factory=dict)  # stage -> totals, last frame


def _counts(w: WorkerWords) -> tuple[int, ...]:
    return tuple(getattr(w, k) for k in COUNTS)


def _rate(now: int, before: int | None, dt: float | None) -> float | None:
    if before is None or not dt:
        return None
    return max(0, now - before) / dt


class Tracker:
    """Turns each new :class:`Sample` into a :class:`Frame`, with the rates
    since the sample before it."""

    def __init__(self) -> None:
        self._prev: Sample | None = None
        self._prev_regions: dict[tuple[str, int], Snapshot] = {}
        self._runs: dict[str, _RunState] = {}

    def frame(self, s: Sample) -> Frame:
        """The frame of sample ``s`` (rates against the previous one)."""
        dt = s.t - self._prev.t if self._prev is not None else None
        regions = [self._region(snap, dt) for snap in s.regions]
        self._prev_regions = {(r.name, r.created_ns): r for r in s.regions}
        self._prev = s
        runs = self._pipelines(s, regions, dt)
        # Stand-alone regions first, then each run's, in stage order.
        order = {r.base: i for i, r in enumerate(runs)}
        regions.sort(key=lambda r: (r.run is not None, order.get(r.run or "", -1),
                                    _run_position(r.name) if r.run else (0, r.name)))
        return Frame(s.namespace, s.wall, dt, regions, runs, s.supervisor,
                     self._processes(s, runs))

    # ------------------------------------------------------------ regions --
    def _region(self, snap: Snapshot, dt: float | None) -> RegionRow:
        m = RUN_RE.match(snap.name)
        row = RegionRow(snap.name, snap.state, run=m["base"] if m else None)
        if snap.state != "ok":
            return row
        row.pattern, row.lossy, row.capacity = snap.pattern, snap.lossy, snap.capacity
        row.fill = snap.fill
        row.fill_pct = 100.0 * snap.fill / snap.capacity if snap.capacity else None
        row.messages_in, row.messages_out = snap.messages_in, snap.messages_out
        row.bytes_in, row.bytes_out = snap.bytes_in, snap.bytes_out
        row.attached = [Attached(v.pid, v.role, v.alive) for v in snap.slots]
        prev = self._prev_regions.get((snap.name, snap.created_ns))
        if prev is not None:
            row.in_per_s = _rate(snap.messages_in, prev.messages_in, dt)
            row.out_per_s = _rate(snap.messages_out, prev.messages_out, dt)
            row.bytes_in_per_s = _rate(snap.bytes_in, prev.bytes_in, dt)
            row.bytes_out_per_s = _rate(snap.bytes_out, prev.bytes_out, dt)
        if snap.pattern is not None and L.TRAITS[snap.pattern].fan_out:
            tail = snap.counters.get("tail", 0)
            behind = [(tail - v.cursor, v.pid) for v in snap.slots
                      if v.role == "consumer" and v.state == L.SLOT_ACTIVE and v.alive]
            if behind:
                row.lag, row.lag_pid = max(behind)
                row.lag = max(0, row.lag)
            row.missed = sum(v.missed for v in snap.slots if v.role == "consumer")
        return row

    # ---------------------------------------------------------- pipelines --
    def _pipelines(self, s: Sample, regions: list[RegionRow], dt: float | None) -> list[RunRow]:
        by_run: dict[str, list[RegionRow]] = {}
        for r in regions:
            if r.run is not None:
                by_run.setdefault(r.run, []).append(r)
        for base in list(self._runs):
            if base not in by_run:
                del self._runs[base]  # the run is over
        runs = []
        for base, rows in sorted(by_run.items()):
            m = RUN_RE.match(rows[0].name)
            assert m is not None
            pid = int(m["pid"])
            run = RunRow(base, m["pipeline"], pid, int(m["run"]), pid_exists(pid))
            state = self._runs.setdefault(base, _RunState())
            edges: list[tuple[int, str, RegionRow]] = []
            for r in rows:
                rm = RUN_RE.match(r.name)
                if rm is not None and rm["index"] is not None:
                    edges.append((int(rm["index"]), rm["stage"], r))
            edges.sort(key=lambda e: e[0])
            live_consumers: dict[str, set[int]] = {}
            for _i, stage, r in edges:
                pids = {a.pid for a in r.attached if a.role == "consumer"}
                for p in pids:
                    state.stage_of[p] = stage
                live_consumers[stage] = {a.pid for a in r.live if a.role == "consumer"}
            entries = s.boards.get(base, [])
            self._follow(state, entries)
            for i, stage, r in edges:
                run.stages.append(self._stage(state, i, stage, r, entries,
                                              live_consumers[stage], dt))
            runs.append(run)
        return runs

    @staticmethod
    def _follow(state: _RunState, entries: list[WorkerWords]) -> None:
        """Fold the counts of workers whose board entry changed hands."""
        present = {w.entry for w in entries}
        for entry, gone in list(state.entries.items()):
            if entry not in present:
                _fold(state, gone)
                del state.entries[entry]
        for w in entries:
            old = state.entries.get(w.entry)
            if old is not None and old.pid != w.pid:
                _fold(state, old)
            stage = state.stage_of.get(w.pid) or (old.stage if old and old.pid == w.pid else None)
            state.entries[w.entry] = _Seen(w.pid, stage, _counts(w))

    @staticmethod
    def _stage(state: _RunState, index: int, name: str, edge: RegionRow,
               entries: list[WorkerWords], live: set[int], dt: float | None) -> StageRow:
        totals = list(state.gone.get(name, [0] * len(COUNTS)))
        busy = 0
        for w in entries:
            seen = state.entries.get(w.entry)
            if seen is None or seen.stage != name:
                continue
            for k, v in enumerate(seen.counts):
                totals[k] += v
            if w.item and w.pid in live:
                busy += 1
        first, again, out, dead, skipped, errors = totals
        before = state.last.get(name)
        state.last[name] = tuple(totals)
        return StageRow(
            index, name, workers=len(live), busy=busy, items=first,
            items_per_s=_rate(first, before[0] if before else None, dt),
            out=out, out_per_s=_rate(out, before[2] if before else None, dt),
            queued=max(0, edge.messages_in - edge.messages_out),
            redelivered=again, dead_letters=dead, skipped=skipped, errors=errors)

    # ---------------------------------------------------------- processes --
    def _processes(self, s: Sample, runs: list[RunRow]) -> list[ProcessRow]:
        procs: dict[int, ProcessRow] = {}
        for snap in s.regions:
            for v in snap.slots:
                p = procs.get(v.pid)
                if p is None:
                    p = procs[v.pid] = ProcessRow(v.pid, s.commands.get(v.pid, "?"), v.alive)
                p.alive = p.alive or v.alive
                if v.role == "producer":
                    p.producer += 1
                elif v.role == "consumer":
                    p.consumer += 1
                if snap.name not in p.regions:
                    p.regions.append(snap.name)
        sup = s.supervisor
        if sup.pid:
            p = procs.get(sup.pid)
            if p is None:
                p = procs[sup.pid] = ProcessRow(sup.pid, s.commands.get(sup.pid, "?"),
                                                pid_exists(sup.pid))
            p.what = "supervisor"
        for run in runs:
            if run.pid in procs:
                procs[run.pid].what = f"pipeline {run.pipeline}"
            state = self._runs.get(run.base)
            for seen in (state.entries.values() if state else ()):
                if seen.pid in procs and seen.stage:
                    procs[seen.pid].what = f"worker {run.pipeline}/{seen.stage}"
        for c in sup.clients:
            if c.pid in procs:
                procs[c.pid].supervisor = "connected" if c.connected else "watched"
        return sorted(procs.values(), key=lambda p: p.pid)


def _fold(state: _RunState, old: _Seen) -> None:
    if old.stage is None:
        return
    acc = state.gone.setdefault(old.stage, [0] * len(COUNTS))
    for k, v in enumerate(old.counts):
        acc[k] += v


def _run_position(name: str) -> tuple[int, str]:
    """Where a run's region goes among the run's: its edges in stage order,
    then its output, control and board channels."""
    m = RUN_RE.match(name)
    if m is None:
        return 1 << 31, name
    if m["index"] is not None:
        return int(m["index"]), name
    return (1 << 30) + ("out", "ctl", "board").index(m["rest"]), name
