"""A subscriber of a feedd feed: the snapshot, then every update.

    python examples/feedd/subscribe.py                 # lossless: feedd waits for it
    python examples/feedd/subscribe.py --lossy --slow 0.001   # falls behind, says by how much

It prints the snapshot it joined at, then a line a second (seq, updates/s,
updates missed, whether the publisher is alive), and a summary when it
stops: on SIGTERM or Ctrl-C, at ``--until SEQ`` or after ``--count N``
updates. ``--record FILE`` writes the snapshot and every update it applied
as JSON lines (the tests check them against the publisher's ticks);
``--json`` prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

# feed.py is beside this file (the script's folder is on sys.path only when it
# runs as a script, not when the tests import it).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import feed

import shmring


class _Stop:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="subscribe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="ticks", help="feed name (default %(default)s)")
    p.add_argument("--lossy", action="store_true",
                   help="read the lossy channel: never holds feedd up, counts what it missed")
    p.add_argument("--slow", type=float, default=0.0, metavar="SECONDS",
                   help="pause this long after each update (to fall behind)")
    p.add_argument("--until", type=int, default=None, metavar="SEQ",
                   help="stop once an update of at least this seq is applied")
    p.add_argument("--count", type=int, default=None, metavar="N", help="stop after N updates")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the feed to appear (default %(default)s)")
    p.add_argument("--record", type=Path, default=None, metavar="FILE",
                   help="write the snapshot and every update to FILE as JSON lines")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no line a second")
    return p


def _done(args: argparse.Namespace, sub: feed.Subscriber, updates: int) -> bool:
    if args.count is not None and updates >= args.count:
        return True
    return args.until is not None and sub.seq >= args.until


def follow(args: argparse.Namespace, sub: feed.Subscriber, stop: _Stop,
           record: IO[str] | None) -> int:
    """Apply updates until told to stop; how many were applied."""
    updates = 0
    last_print, last_seq = time.monotonic(), sub.seq
    said_gone = False
    while stop.signal is None and not _done(args, sub, updates):
        try:
            u = sub.recv(timeout=0.2)
        except shmring.Timeout:
            if not sub.publisher_alive and not said_gone and not args.quiet:
                print(f"publisher gone at seq {sub.seq}; waiting for it to come back",
                      flush=True)
                said_gone = True
            continue
        said_gone = False
        updates += 1
        if record is not None:
            record.write(json.dumps([u.seq, u.key, u.value, u.gap]) + "\n")
        if args.slow:
            time.sleep(args.slow)
        now = time.monotonic()
        if now - last_print >= 1.0 and not args.quiet:
            rate = (sub.seq - last_seq) / (now - last_print)
            print(f"seq {sub.seq}  {rate:,.0f} updates/s  missed {sub.missed}  "
                  f"{len(sub.state)} keys", flush=True)
            last_print, last_seq = now, sub.seq
    return updates


def main(argv: list[str] | None = None) -> int:
    """Subscribe, follow, print the summary; the exit status."""
    args = parser().parse_args(argv)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        try:
            sub = feed.Subscriber(args.name, lossy=args.lossy, wait=0)
        except shmring.RegionNotFound:
            if not args.quiet:
                print(f"waiting for feed {args.name!r} to appear", flush=True)
            sub = feed.Subscriber(args.name, lossy=args.lossy, wait=args.wait)
    except (shmring.RegionNotFound, shmring.Timeout) as e:
        print(f"subscribe: {e}", file=sys.stderr)
        return 1
    kind = "lossy" if args.lossy else "lossless"
    record = args.record.open("w") if args.record is not None else None
    try:
        if record is not None:
            record.write(json.dumps({"snapshot_seq": sub.snapshot_seq, "snapshot": sub.snapshot,
                                     "snapshot_seqs": sub.snapshot_seqs}) + "\n")
        if not args.quiet:
            print(f"subscribed to {args.name!r} ({kind}) at seq {sub.snapshot_seq}: "
                  f"{len(sub.snapshot)} keys in the snapshot", flush=True)
        updates = follow(args, sub, stop, record)
        summary: dict[str, Any] = {
            "name": args.name, "channel": kind, "snapshot_seq": sub.snapshot_seq,
            "last_seq": sub.seq, "updates": updates, "missed": sub.missed,
            "channel_missed": sub.channel_missed, "duplicates": sub.duplicates,
            "keys": len(sub.state)}
    finally:
        if record is not None:
            record.close()
        sub.close()
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(f"stopped at seq {summary['last_seq']}: {updates} updates since seq "
              f"{summary['snapshot_seq']}, missed {summary['missed']} (the channel counted "
              f"{summary['channel_missed']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
