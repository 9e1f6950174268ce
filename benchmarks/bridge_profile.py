"""Where the bridges spend their time: both ``shmring bridge`` processes
sampled by ``py-spy record`` (``pip install py-spy``) while a stream runs.

py-spy samples every thread of a process ``RATE`` times a second without
stopping it (``--nonblocking``) and keeps only the samples of threads that
are running (not waiting in a system call); a call into C (the extension,
pyzmq) counts in the Python line that makes it. The summary counts, for
each bridge, the samples per thread, and per function (file and name,
lines merged) the samples in which it is the innermost
Python frame ("self") and those in which it is anywhere on the stack
("total"), as percentages of that bridge's samples. A second py-spy
per bridge samples only the thread holding the GIL (``--gil``): the
Python work itself, without the time threads spend waiting for the GIL.
The raw stacks (``bridge-a.txt``, ``bridge-a-gil.txt``, ``bridge-b.txt``,
``bridge-b-gil.txt``, one collapsed stack per line, as flamegraph tools
read them) stay in the output directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .bridge_link import BridgedLink

RATE = 250
#: Functions listed per bridge.
TOP = 12

#: Frames of the threading module under every thread's own.
_BOOT = ("Thread._bootstrap", "Thread.run ")
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str:
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return exe


def profile_bridges(link: BridgedLink, out_dir: str,
                    workload: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Run ``workload()`` with both bridges under py-spy; the stacks per
    side, the workload's result and the seconds sampled."""
    os.makedirs(out_dir, exist_ok=True)
    exe = _py_spy()
    spies: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    for side, br in link.bridges.items():
        for view, extra in (("", []), ("-gil", ["--gil"])):
            path = os.path.join(out_dir, f"bridge-{side}{view}.txt")
            spies[side + view] = (subprocess.Popen(
                [exe, "record", "--pid", str(br.pid), "--rate", str(RATE), "--nonblocking",
                 "--threads", *extra, "--format", "raw", "--output", path],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path)
    time.sleep(1.0)  # py-spy attached
    try:
        result = workload()
    finally:
        for proc, _ in spies.values():
            proc.send_signal(signal.SIGINT)
        errors = []
        for key, (proc, _) in spies.items():
            _, err = proc.communicate(timeout=60)
            if proc.returncode not in (0, -signal.SIGINT):
                errors.append(f"py-spy on bridge {key}: exit {proc.returncode}: "
                              f"{err.decode(errors='replace')[-500:]}")
    if errors:
        raise RuntimeError("; ".join(errors))
    stacks = {key: _read(path) for key, (_, path) in spies.items()}
    return {"seconds": result["seconds"], "rate": RATE, "workload": result, "stacks": stacks,
            "out_dir": out_dir}


def _read(path: str) -> list[tuple[str, int]]:
    out = []
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack and n.isdigit():
                out.append((stack, int(n)))
    return out


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for cut in ("site-packages/", "src/", "lib/python"):
        if cut in file:
            file = file.split(cut, 1)[1]
    return f"{m['fn']} ({file})"


def analyse(stacks: list[tuple[str, int]]) -> dict[str, Any]:
    """Samples per thread, and self and total samples per function."""
    threads: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total: Counter[str] = Counter()
    n = 0
    for stack, count in stacks:
        frames = stack.split(";")
        thread = re.sub(r"^.*?\(\d+\):\s*|^process \d+:\s*", "", frames[0]).strip('" ')
        frames = [_name(f) for f in frames[1:] if not f.startswith(_BOOT)]
        threads[thread] += count
        n += count
        if frames:
            self_[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    return {"samples": n, "threads": threads, "self": self_, "total": total}


def summary(prof: dict[str, Any]) -> str:
    """The profile as text: per bridge, its threads and its costliest
    functions, first over the running threads, then over the thread holding
    the GIL."""
    w = prof["workload"]
    lines = [f"Profile: 64 B one per call, {w['rate'] / 1e3:,.0f}k msgs/s for "
             f"{prof['seconds']:.1f} s under py-spy ({prof['rate']} samples/s per thread; "
             f"stacks in {prof['out_dir']}). 'running': samples of threads not blocked in a "
             "system call (a thread waiting for the GIL counts); 'GIL': samples of the "
             "thread holding the GIL only. Shares of a core are over the stream's time."]
    for key in sorted(prof["stacks"]):
        side, _, gil = key.partition("-")
        a = analyse(prof["stacks"][key])
        n = a["samples"] or 1
        role = "exporting (b)" if side == "b" else "importing (a)"
        cpu = a["samples"] / prof["rate"] / prof["seconds"]
        what = "holding the GIL" if gil else "running"
        lines.append(f"\nbridge {side}, {role}, {what}: {a['samples']} samples "
                     f"(~{cpu:.0%} of a core); threads: " + ", ".join(
                         f"{t or '?'} {c / n:.0%}" for t, c in a["threads"].most_common(5)))
        lines.append("\n| self | total | function |")
        lines.append("|---|---|---|")
        for fn, c in a["self"].most_common(TOP):
            lines.append(f"| {c / n:.1%} | {a['total'][fn] / n:.1%} | {fn} |")
        lines.append("\nby total: " + "; ".join(
            f"{fn} {c / n:.0%}" for fn, c in a["total"].most_common(TOP // 2)))
    return "\n".join(lines)
