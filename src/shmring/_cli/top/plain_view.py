"""The plain view: a frame as lines of text, for a terminal without rich
(or ``--plain``) and for ``--once`` into a pipe. Between frames on a
terminal it clears the screen (the one escape sequence it writes); into a
pipe or file it writes each frame after the last."""

from __future__ import annotations

import io
import shutil
import sys
from typing import TextIO

from ..readable import table
from . import cells as C
from .model import Frame


def render(f: Frame, interval: float | None = None, *, keys: bool = False) -> str:
    """The whole frame as text (lines end in ``\\n``)."""
    out = io.StringIO()
    out.write(C.title(f, interval, keys=keys) + "\n")
    out.write(C.supervisor_line(f) + "\n\n")
    if f.regions:
        rows = [C.REGION_HEADER]
        run = None
        titles = {r.base: C.run_title(r) for r in f.runs}
        for r in f.regions:
            if r.run != run and r.run is not None:
                rows.append([titles.get(r.run, r.run)] + [""] * (len(C.REGION_HEADER) - 1))
            run = r.run
            rows.append(C.region_cells(r))
        table(rows, out)
    else:
        out.write(f"no regions in namespace {f.namespace!r}\n")
    for pr in f.runs:
        out.write("\n" + C.run_title(pr) + "\n")
        table([C.STAGE_HEADER] + [C.stage_cells(st) for st in pr.stages], out)
    if f.processes:
        out.write("\n")
        table([C.PROCESS_HEADER] + [C.process_cells(p) for p in f.processes], out)
    return out.getvalue()


class PlainScreen:
    """Shows frame after frame on ``out``."""

    def __init__(self, out: TextIO | None = None, interval: float | None = None,
                 keys: bool = False) -> None:
        self.out = out or sys.stdout
        self.interval = interval
        self.keys = keys
        self.tty = self.out.isatty()

    def show(self, f: Frame) -> None:
        """Draw frame ``f`` (over the last one on a terminal)."""
        text = render(f, self.interval, keys=self.keys)
        if self.tty:
            cols, lines = shutil.get_terminal_size()
            # Cut to the screen: a wrapped or scrolled frame would not be
            # overwritten by the next one.
            text = "\n".join(line[:cols] for line in text.splitlines()[:max(1, lines - 1)])
            self.out.write("\x1b[H\x1b[2J" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the last frame's line on a terminal."""
        if self.tty:
            self.out.write("\n")
            self.out.flush()
