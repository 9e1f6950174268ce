"""One look at a namespace: its regions (read the way ``shmring ls`` reads
them), the status boards of its pipeline runs, the command names of the
processes attached, and its supervisor (:mod:`.supervisor`), all at one
monotonic time stamp.

Nothing here attaches a slot, takes a lock the data path takes, or writes to
a segment: each region is mapped, its header and attach table read, and
unmapped again (``_region.inventory.snapshot``); a board is read as words.
A frame therefore costs the traffic a few cache-line reads of its counters.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field

from ... import _core
from ... import _layout as L
from ..._pipeline import board as B
from ..._region import inventory as _inv
from ..._region.guard import faulted, unmap
from ..._region.names import PREFIX, list_segments
from .supervisor import SupervisorState, observe

#: A pipeline run's channels: ``<pipeline>.<parent pid>.<run>.<rest>``, where
#: the rest is ``<i>.<stage>`` (the edge into stage i), ``out``, ``ctl`` or
#: ``board`` (``_pipeline/run.py`` names them).
RUN_RE = re.compile(r"(?P<base>(?P<pipeline>[A-Za-z0-9_-]{1,64})\.(?P<pid>\d+)\.(?P<run>\d+))"
                    r"\.(?P<rest>board|out|ctl|(?P<index>\d+)\.(?P<stage>[A-Za-z0-9_-]{1,64}))\Z")


@dataclass
class WorkerWords:
    """The words of one taken board entry (a worker's own counts)."""

    entry: int
    pid: int
    item: int  # 0 when idle, else the item it works on, plus one
    first: int  # items taken for the first time
    again: int  # items taken again after a worker died holding them
    out: int
    dead: int  # items it gave up (dead letters)
    skipped: int
    errors: int
    busy_ns: int


@dataclass
class Sample:
    """A namespace at one moment."""

    namespace: str
    t: float  # time.monotonic()
    wall: float  # time.time()
    regions: list[_inv.Snapshot]
    boards: dict[str, list[WorkerWords]]  # run base -> its taken entries
    supervisor: SupervisorState
    commands: dict[int, str] = field(default_factory=dict)  # pid -> /proc comm


def read_board(namespace: str, name: str) -> list[WorkerWords]:
    """The taken entries of board region ``name``. Raises FileNotFoundError
    if it is gone."""
    buf, st = _inv.map_segment(f"/{PREFIX}.{namespace}.{name}")
    if buf is None:
        return []
    try:
        if st.st_size < L.REGION_HEADER_SIZE or _core.load(buf, L.HDR_MAGIC) != L.SHMRING_MAGIC:
            return []
        off = int(_core.load(buf, L.HDR_DATA_OFFSET))
        cap = int(_core.load(buf, L.HDR_CAPACITY))
        if off + cap > st.st_size or cap < 8 * (B.HEAD + B.ENTRY):
            return []
        out: list[WorkerWords] = []
        with memoryview(buf) as whole, whole[off:off + cap] as data, data.cast("Q") as words:
            for i in range((cap // 8 - B.HEAD) // B.ENTRY):
                b = B.HEAD + i * B.ENTRY
                pid = words[b + B.PID]
                if pid:
                    out.append(WorkerWords(i, pid, words[b + B.ITEM], words[b + B.FIRST],
                                           words[b + B.AGAIN], words[b + B.OUT],
                                           words[b + B.DEAD], words[b + B.SKIPPED],
                                           words[b + B.ERRORS], words[b + B.BUSY_NS]))
        # Truncated while we read it: what we read is zeros, not the board.
        return [] if faulted(buf) else out
    finally:
        unmap(buf)


def command_name(pid: int) -> str:
    """The command name of ``pid`` (``/proc/<pid>/comm``), ``?`` if gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def take(namespace: str, *, supervisor: bool = True) -> Sample:
    """Read everything of ``namespace`` now."""
    t, wall = time.monotonic(), time.time()
    regions: list[_inv.Snapshot] = []
    boards: dict[str, list[WorkerWords]] = {}
    for _ns, name in list_segments(namespace):
        try:
            snap = _inv.snapshot(namespace, name)
        except (FileNotFoundError, PermissionError):
            continue  # removed meanwhile, or another user's
        regions.append(snap)
        m = RUN_RE.match(name)
        if m and m["rest"] == "board" and snap.state == "ok":
            with contextlib.suppress(FileNotFoundError, PermissionError):
                boards[m["base"]] = read_board(namespace, name)
    sup = observe(namespace) if supervisor else SupervisorState(namespace)
    pids = {s.pid for r in regions for s in r.slots}
    pids.update(w.pid for ws in boards.values() for w in ws)
    if sup.pid:
        pids.add(sup.pid)
    return Sample(namespace, t, wall, regions, boards, sup,
                  {p: command_name(p) for p in sorted(pids) if p > 0})


def pid_exists(pid: int) -> bool:
    """True if a process ``pid`` exists (maybe a zombie)."""
    return pid > 0 and os.path.exists(f"/proc/{pid}")
