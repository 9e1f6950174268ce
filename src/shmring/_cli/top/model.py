"""What one frame of ``shmring top`` shows, as plain data: the rows of its
tables (regions, pipeline stages, processes) and the supervisor's state. The
views (:mod:`.rich_view`, :mod:`.plain_view`) draw it, ``--json`` prints
:meth:`Frame.to_json`; :mod:`.rates` builds it from two samples.

A rate is ``None`` when there is nothing to diff against yet (the first
frame, or a region created since the last one); the views show ``-``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .supervisor import SupervisorState


@dataclass
class Attached:
    """A taken slot of a region's attach table."""

    pid: int
    role: str  # "producer" or "consumer"
    alive: bool


@dataclass
class RegionRow:
    """One region: its ring's counters and what changed since the last frame."""

    name: str
    state: str  # "ok", "unpublished" or "corrupt"
    pattern: str | None = None
    lossy: bool = False
    capacity: int = 0
    fill: int = 0  # bytes waiting (for broadcast: behind the slowest consumer)
    fill_pct: float | None = None
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    in_per_s: float | None = None
    out_per_s: float | None = None
    bytes_in_per_s: float | None = None
    bytes_out_per_s: float | None = None
    attached: list[Attached] = field(default_factory=list)
    lag: int | None = None  # broadcast: bytes the slowest active consumer is behind
    lag_pid: int | None = None  # ... and its pid
    missed: int = 0  # lossy broadcast: messages its consumers missed
    run: str | None = None  # the pipeline run it belongs to

    @property
    def live(self) -> list[Attached]:
        """The slots whose process lives."""
        return [a for a in self.attached if a.alive]


@dataclass
class StageRow:
    """One stage of a pipeline run, from its input edge and the board."""

    index: int
    name: str
    workers: int = 0  # live processes consuming its input edge
    busy: int = 0  # of which working on an item now
    items: int = 0  # items taken for the first time (workers seen so far)
    items_per_s: float | None = None
    out: int = 0
    out_per_s: float | None = None
    queued: int = 0  # records in its input edge not yet taken
    redelivered: int = 0
    dead_letters: int = 0
    skipped: int = 0
    errors: int = 0


@dataclass
class RunRow:
    """A running pipeline (one ``with pipeline.run()``) and its regions."""

    base: str  # "<pipeline>.<parent pid>.<run>", the prefix of its channels
    pipeline: str
    pid: int
    run: int
    parent_alive: bool
    stages: list[StageRow] = field(default_factory=list)


@dataclass
class ProcessRow:
    """A process in some region's attach table (or the supervisor)."""

    pid: int
    command: str
    alive: bool
    producer: int = 0  # slots of that role it holds
    consumer: int = 0
    regions: list[str] = field(default_factory=list)
    what: str = ""  # "supervisor", "pipeline NAME", "worker NAME/STAGE"
    supervisor: str = ""  # as the supervisor knows it: "connected", "watched" or ""


@dataclass
class Frame:
    """Everything one refresh shows."""

    namespace: str
    time: float  # wall clock, seconds since the epoch
    window: float | None  # seconds between the two samples the rates come from
    regions: list[RegionRow]
    runs: list[RunRow]
    supervisor: SupervisorState
    processes: list[ProcessRow]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``shmring top --json``)."""
        return {"namespace": self.namespace, "time": self.time, "window": self.window,
                "regions": [asdict(r) for r in self.regions],
                "pipelines": [asdict(r) for r in self.runs],
                "supervisor": self.supervisor.to_json(),
                "processes": [asdict(p) for p in self.processes]}
