"""``shmring inspect`` of a journal: its segments, sequence range, named
cursors and durable point; and the one ``inspect`` command that takes either
a region's name or a journal's directory.

Which one is meant is read from the argument, never guessed from what
happens to exist in /dev/shm: an argument that names a directory holding a
journal is that journal; anything else must be a region name (a region name
has no ``/``, so ``./events`` picks the directory ``events`` over a region
of that name). A path that is neither is refused as a bad region name that
also says it is no journal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .._journal import Journal
from . import args as _types
from . import inventory as _regions
from .readable import size, table


def is_journal_dir(path: str) -> bool:
    """True when ``path`` is a directory that holds a journal."""
    return os.path.isdir(path) and Journal.exists(path)


def inspect_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring inspect`` (a region or a journal)."""
    p.add_argument("name", metavar="NAME|DIR",
                   help="a region's name (as given to Channel.create), or a journal's directory")
    p.add_argument("--namespace", "-n", type=_types.namespace,
                   help="the region's namespace (default: $SHMRING_NAMESPACE or 'default')")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def inspect(args: argparse.Namespace) -> int:
    """Show the journal in the directory ``args.name``, or the region of that name."""
    if is_journal_dir(args.name):
        return journal(args.name, as_json=args.json)
    try:
        _types.region_name(args.name)
    except argparse.ArgumentTypeError as e:
        hint = " (and not a journal directory)" if os.sep in args.name or \
            os.path.isdir(args.name) else ""
        print(f"shmring: error: argument NAME|DIR: {e}{hint}", file=sys.stderr)
        return 2
    return _regions.inspect(args)


def journal(path: str, *, as_json: bool) -> int:
    """Print what the journal in ``path`` holds; 0."""
    j = Journal.open(path, readonly=True)
    try:
        info = j.info()
    finally:
        j.close()
    if as_json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _show(path, info)
    return 0


def _count(first: int, nxt: int) -> str:
    return f"{nxt - first:,} records" if nxt > first else "empty"


def _show(path: str, info: dict[str, Any]) -> None:
    first, nxt, durable = info["first_seq"], info["next_seq"], info["durable_seq"]
    print(f"journal {path}")
    durable_text = "nothing yet" if durable < first else f"seq {durable}"
    behind = nxt - 1 - durable if nxt > first else 0
    rows = [("records", f"seq {first}..{nxt - 1} ({_count(first, nxt)})" if nxt > first
             else f"none (next seq {nxt})"),
            ("durable up to", durable_text + (f" ({behind:,} appended since, not yet synced)"
                                              if behind > 0 else "")),
            ("bytes", f"{info.get('bytes', 0):,} in records"),
            ("sync", str(info.get("sync", "?"))),
            ("segment size", size(info["segment_size"]) if "segment_size" in info else "?"),
            ("writer", _writer(info.get("writer_pid")))]
    table([[k + ":", v] for k, v in rows], sys.stdout)
    print("\nsegments:")
    segs = info.get("segments", [])
    if not segs:
        print("  (none)")
    else:
        srows = [["  FILE", "FIRST SEQ", "LAST SEQ", "RECORDS", "USED", "SIZE"]]
        for s in segs:
            n = s["next_seq"] - s["first_seq"]
            srows.append([f"  {s['file']}", str(s["first_seq"]),
                          str(s["next_seq"] - 1) if n else "-", f"{n:,}",
                          size(s["used"]), size(s["size"])])
        table(srows, sys.stdout)
    print("\ncursors:")
    cursors = info.get("cursors", {})
    if not cursors:
        print("  (none)")
        return
    crows = [["  NAME", "ACKED", "BEHIND"]]
    for name, acked in sorted(cursors.items()):
        left = nxt - 1 - acked if acked is not None else nxt - first
        crows.append([f"  {name}", "-" if acked is None else str(acked), f"{max(left, 0):,}"])
    table(crows, sys.stdout)


def _writer(pid: int | None) -> str:
    if not pid:
        return "none"
    return f"pid {pid}" + ("" if os.path.exists(f"/proc/{pid}") else " (gone)")
