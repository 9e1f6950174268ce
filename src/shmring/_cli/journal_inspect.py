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
from .._journal.meta import META_NAME
from . import args as _types
from . import inventory as _regions
from .readable import size, table


def is_journal_dir(path: str) -> bool:
    """True when ``path`` is a directory that holds a journal."""
    return os.path.isfile(os.path.join(path, META_NAME))


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
    j = Journal.open(path)
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


def _show(path: str, info: dict[str, Any]) -> None:
    first, nxt, durable = info["first_seq"], info["next_seq"], info["durable_seq"]
    segs = info["segments"]
    print(f"journal {path}")
    records = f"seq {first}..{nxt - 1} ({nxt - first:,} records)" if nxt > first else \
        f"none (the next is seq {nxt})"
    if durable >= nxt:
        point = f"seq {durable}: every record is on disk" if nxt > first else f"seq {durable}"
    else:
        point = (f"seq {durable}: the records below it are on disk, {durable}..{nxt - 1} "
                 "not synced yet")
    rows = [("records", records),
            ("durable point", point),
            ("on disk", f"{size(sum(s['bytes'] for s in segs))} in {len(segs)} segment file(s)"),
            ("sync", str(info["sync"])),
            ("segment size", size(info["segment_size"])),
            ("writer", _writer(info["writer_pid"]))]
    table([[k + ":", v] for k, v in rows], sys.stdout)
    print("\nsegments:")
    if not segs:
        print("  (none)")
    else:
        srows = [["  FILE", "FIRST SEQ", "LAST SEQ", "RECORDS", "USED", "SIZE", "STATE"]]
        for s in segs:
            srows.append([f"  {s['file']}", str(s["first_seq"]),
                          "-" if s["last_seq"] is None else str(s["last_seq"]),
                          f"{s['records']:,}", size(s["used"]), size(s["bytes"]),
                          "sealed" if s["sealed"] else "open"])
        table(srows, sys.stdout)
    print("\ncursors:")
    cursors: dict[str, int] = info["cursors"]
    if not cursors:
        print("  (none)")
        return
    crows = [["  NAME", "NEXT SEQ", "BEHIND"]]
    for name, at in sorted(cursors.items()):
        crows.append([f"  {name}", str(at), f"{max(nxt - at, 0):,}"])
    table(crows, sys.stdout)


def _writer(pid: int | None) -> str:
    if not pid:
        return "none"
    return f"pid {pid}" + ("" if os.path.exists(f"/proc/{pid}") else " (gone)")
