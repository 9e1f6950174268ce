"""``shmring ls``, ``inspect`` and ``gc``: what is in /dev/shm, read straight
from the segments (no supervisor needed). Tables for people, ``--json`` for
scripts."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from .. import _layout as L
from .._region import inventory as _gc
from .._region.names import check_namespace, default_namespace, unlink_segment
from .._supervisor import instance as _instance
from . import args as _types
from .readable import age, health, local_time, process_start, size, table

#: Slot states as `shmring inspect` names them.
_STATES = {L.SLOT_FREE: "free", L.SLOT_ACTIVE: "active", L.SLOT_CLOSING: "closing",
           L.SLOT_UNTETHERED: "untethered"}


def _namespace_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--namespace", "-n", type=_types.namespace,
                   help=f"only this namespace (default: {what})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


# ----------------------------------------------------------------------- ls --
def ls_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring ls``."""
    _namespace_arg(p, "all")


def ls(args: argparse.Namespace) -> int:
    """List regions: size, pattern, persistence, processes, fill, messages."""
    ns: str | None = args.namespace
    snaps = _gc.snapshots(ns)
    if args.json:
        json.dump([dict(s.to_json(), verdict=_gc.verdict(s)) for s in snaps], sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
        return 0
    if not snaps:
        print("no regions" + (f" in namespace {ns!r}" if ns else ""))
        return 0
    rows = [["NAMESPACE", "NAME", "PATTERN", "SIZE", "PERSISTENT", "FILL", "IN", "OUT",
             "PROCESSES"]]
    for s in snaps:
        if s.state != "ok":
            rows.append([s.namespace, s.name, f"({health(s).label})", size(s.size), "", "", "",
                         "", ""])
            continue
        procs = " ".join(f"{v.pid}:{v.role}" + ("" if v.alive else "(dead)")
                         + ("(untethered)" if v.state == L.SLOT_UNTETHERED else "")
                         for v in s.slots)
        fill = f"{100 * s.fill / s.capacity:.0f}% of {size(s.capacity)}" if s.capacity else ""
        rows.append([s.namespace, s.name, s.pattern + (" lossy" if s.lossy else "")
                     if s.pattern else "?", size(s.size), "yes" if s.persistent else "no",
                     fill, f"{s.messages_in:,}", f"{s.messages_out:,}", procs or "-"])
    table(rows, sys.stdout)
    return 0


# ------------------------------------------------------------------ inspect --
def inspect_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring inspect``."""
    p.add_argument("name", type=_types.region_name,
                   help="the region's name (as given to Channel.create)")
    _namespace_arg(p, "$SHMRING_NAMESPACE or 'default'")


def inspect(args: argparse.Namespace) -> int:
    """Print one region's header, counters and attach table."""
    ns = check_namespace(args.namespace or default_namespace())
    try:
        s = _gc.snapshot(ns, args.name)
    except FileNotFoundError:
        print(f"shmring: error: no region {args.name!r} in namespace {ns!r} "
              "(`shmring ls` lists them)", file=sys.stderr)
        return 1
    if args.json:
        json.dump(dict(s.to_json(), verdict=_gc.verdict(s)), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"region {s.name!r}  namespace {s.namespace!r}  segment {s.segment}  "
          f"({size(s.size)})")
    state = health(s)
    if state.label != "ok":
        print(f"state: {state.label}" + (f": {state.detail}" if state.detail else ""))
        return 1 if state.failed else 0
    c = s.counters
    untether = (f", slow consumers untethered after {s.slow_consumer_timeout:g} s"
                if s.slow_consumer_timeout else "")
    header = [("pattern", f"{s.pattern}{' (lossy)' if s.lossy else ''}{untether}"),
              ("capacity", f"{s.capacity:,} ({size(s.capacity)})"),
              ("max_message", f"{s.max_message:,}"), ("slots", str(s.slot_count)),
              ("persistent", "yes" if s.persistent else "no"),
              ("created", f"{local_time(s.created_ns / 1e9)} ({age(s.age)} ago)"),
              ("creator pid", str(s.creator_pid)), ("verdict", _gc.verdict(s)),
              ("fill", f"{s.fill:,} bytes"),
              ("messages in/out", f"{s.messages_in:,} / {s.messages_out:,}"),
              ("bytes in/out", f"{s.bytes_in:,} / {s.bytes_out:,}"),
              # The endpoints that closed or died fold their totals into the
              # header (stats_*); "in/out" above adds the attached ones.
              ("  of which closed", f"{c['stats_in_msgs']:,} / {c['stats_out_msgs']:,} "
               f"messages, {c['stats_in_bytes']:,} / {c['stats_out_bytes']:,} bytes "
               "(endpoints gone since)")]
    table([[k + ":", v] for k, v in header], sys.stdout)
    print("\ncounters:")
    table([[f"  {k}", str(v)] for k, v in c.items() if not k.startswith("stats_")], sys.stdout)
    print("\nattach table:")
    if not s.slots:
        print("  (empty)")
        return 0
    rows = [["  SLOT", "PID", "STARTED", "ROLE", "STATE", "ALIVE", "CLAIM", "CURSOR", "MSGS",
             "BYTES", "MISSED"]]
    for v in s.slots:
        rows.append([f"  {v.index}", str(v.pid), process_start(v.start_time), v.role,
                     _STATES.get(v.state, str(v.state)),
                     "yes" if v.alive else "NO (held)" if v.orphan else "NO",
                     "-" if v.claim_pos is None else str(v.claim_pos),
                     str(v.cursor), f"{v.messages:,}", f"{v.bytes:,}", f"{v.missed:,}"])
    table(rows, sys.stdout)
    return 0


# ----------------------------------------------------------------------- gc --
def gc_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring gc``."""
    _namespace_arg(p, "all")
    p.add_argument("--yes", "-y", action="store_true", help="remove them (default: only list)")
    p.add_argument("--persistent", action="store_true",
                   help="also remove persistent regions that no live process uses")


def gc(args: argparse.Namespace) -> int:
    """List (and with --yes remove) regions no live process uses."""
    ns: str | None = args.namespace
    found = []
    for s in _gc.snapshots(ns):
        v = _gc.verdict(s)
        if v == "orphan" and health(s).label == "corrupt":
            v = "corrupt"  # magic overwritten under a live creator: not an orphan
        if v in ("orphan", "corrupt") or (v == "persistent" and args.persistent):
            found.append((s, v))
        elif v == "persistent":
            found.append((s, "persistent (kept; --persistent removes it)"))
    removed = []
    if args.yes:
        for s, v in found:
            if "kept" in v:
                continue
            if s.state == "ok":
                gone = _gc.unlink_if_created(s.segment, s.created_ns)
            else:
                try:
                    unlink_segment(s.segment)
                    gone = True
                except FileNotFoundError:
                    gone = False
            if gone:
                removed.append(s.segment)
    # What a SIGKILLed supervisor leaves: its instance guard, unlocked.
    guards = _instance.stale_namespaces(ns)
    if args.yes:
        guards = [g for g in guards if _instance.remove_stale(g)]
    if args.json:
        json.dump({"found": [dict(s.to_json(), verdict=v) for s, v in found],
                   "removed": removed, "stale_guards": guards,
                   "guards_removed": args.yes}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if guards:
        print(("removed" if args.yes else "found") + " the instance guard of a dead supervisor"
              f" for namespace(s) {', '.join(guards)}"
              + ("" if args.yes else " (`--yes` removes it)"))
    if not found:
        print("no orphaned regions" + (f" in namespace {ns!r}" if ns else ""))
        return 0
    rows = [["NAMESPACE", "NAME", "SIZE", "AGE", "VERDICT", "DEAD PROCESSES"]]
    for s, v in found:
        dead = " ".join(str(x.pid) for x in s.slots if not x.alive)
        rows.append([s.namespace, s.name, size(s.size), age(s.age), v, dead or "-"])
    table(rows, sys.stdout)
    if args.yes:
        print(f"removed {len(removed)} region(s)")
    elif any("kept" not in v for _, v in found):
        again = ["shmring", "gc", "--yes"] + (["-n", ns] if ns else []) + \
            (["--persistent"] if args.persistent else [])
        print(f"(nothing removed: run `{shlex.join(again)}` to remove them)")
    return 0
