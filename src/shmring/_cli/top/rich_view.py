"""The rich view: a frame as rich tables, redrawn in place by
``rich.live.Live`` on the terminal's alternate screen (left as it was on
exit). Only imported when rich is installed (the ``top`` extra); the cells
are :mod:`.cells`', the same as the plain view's."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import cells as C
from .model import Frame

_RIGHT = {"FILL", "MSG/S IN", "MSG/S OUT", "BYTES/S IN", "BYTES/S OUT", "WORKERS", "BUSY",
          "ITEMS/S", "ITEMS", "OUT/S", "QUEUED", "REDELIVERED", "DEAD LETTERS", "PID",
          "REGIONS"}


#: Between two columns. Cells carry their own gap (tables have no padding,
#: and cells are Text, not markup): half the cost of rich's padded cells,
#: which matters at two frames a second beside the traffic.
GAP = "  "


def _table(header: list[str], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", expand=False,
              box=None, header_style="bold reverse", padding=0, show_edge=False)
    for i, h in enumerate(header):
        t.add_column((GAP if i else "") + h, justify="right" if h in _RIGHT else "left",
                     no_wrap=True, overflow="ellipsis")
    return t


def _row(t: Table, cells: list[str], style: str | None = None) -> None:
    t.add_row(*(Text((GAP if i else "") + c) for i, c in enumerate(cells)), style=style)


def render(f: Frame, interval: float | None = None, *, keys: bool = False) -> RenderableType:
    """The whole frame as one renderable."""
    parts: list[RenderableType] = [Text(C.title(f, interval, keys=keys), style="bold"),
                                   Text(C.supervisor_line(f),
                                        style="green" if f.supervisor.answered else "yellow"),
                                   Text("")]
    if f.regions:
        t = _table(C.REGION_HEADER)
        titles = {r.base: C.run_title(r) for r in f.runs}
        run = None
        for r in f.regions:
            if r.run != run and r.run is not None:
                t.add_row(Text(titles.get(r.run, r.run), style="bold cyan"))
            run = r.run
            style = None if r.state == "ok" else "red"
            _row(t, C.region_cells(r), style)
        parts.append(t)
    else:
        parts.append(Text(f"no regions in namespace {f.namespace!r}", style="dim"))
    for pr in f.runs:
        parts.append(Text(""))
        t = _table(C.STAGE_HEADER, title=C.run_title(pr))
        for st in pr.stages:
            _row(t, C.stage_cells(st), "red" if st.dead_letters else None)
        parts.append(t)
    if f.processes:
        parts.append(Text(""))
        t = _table(C.PROCESS_HEADER)
        for p in f.processes:
            _row(t, C.process_cells(p), None if p.alive else "dim")
        parts.append(t)
    return Group(*parts)


def print_once(f: Frame, interval: float | None = None) -> None:
    """Print one frame (``--once``); into a pipe it is as wide as it needs."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(render(f, interval))


class RichScreen:
    """Shows frame after frame in place (``Live``, refreshed only when a
    frame comes: no refresh thread)."""

    def __init__(self, interval: float | None = None, keys: bool = False) -> None:
        self.interval = interval
        self.keys = keys
        self.live = Live(Text(""), auto_refresh=False, screen=True, transient=True,
                         redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def show(self, f: Frame) -> None:
        """Draw frame ``f``."""
        self.live.update(render(f, self.interval, keys=self.keys), refresh=True)

    def close(self) -> None:
        """Leave the alternate screen."""
        self.live.stop()
