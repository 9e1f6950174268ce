"""feedd: a publisher of ticks. Every key's latest price is kept in a
snapshot in shared memory and every update goes out on two broadcast
channels (lossless and lossy), so a subscriber that joins late gets the
snapshot and then every update with no gap (see feed.py for how).

    python examples/feedd/feedd.py run --rate 1000 --keys 100
    python examples/feedd/feedd.py status --json

The ticks are a random walk in cents that depends only on ``--seed``, the
seq and the previous price of the key, so a restarted feedd, which reads
the prices back from the snapshot, goes on with exactly the walk the killed
one would have made (and the tests can replay it: :class:`Ticks`).

``run`` exits 0 on SIGTERM or Ctrl-C. It never ends the stream: the regions
stay while subscribers hold them, and the next ``run`` under the same name
resumes the seq. ``status`` exits 0 when a live publisher holds the feed,
1 when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

# feed.py is beside this file (the script's folder is on sys.path only when it
# runs as a script, not when the tests import it).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import feed

import shmring
from shmring import _layout

DEFAULT_NAME = "ticks"
_M64 = (1 << 64) - 1


def mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Ticks:
    """The tick source: update ``seq`` moves one key's price by -10..+10
    cents (never below one cent), chosen by a hash of ``seed`` and ``seq``."""

    def __init__(self, seed: int, keys: int) -> None:
        if keys < 1:
            raise shmring.InvalidArgument(f"--keys must be at least 1, not {keys}")
        self.seed = seed
        self.keys = keys

    @staticmethod
    def key(i: int) -> str:
        """The name of key number ``i``."""
        return f"K{i:04d}"

    def next(self, seq: int, state: dict[str, Any]) -> tuple[str, float]:
        """The key and new price of update ``seq``, given the latest prices."""
        h = mix((self.seed << 40) ^ seq)
        i = h % self.keys
        key = self.key(i)
        prev = state.get(key)
        cents = round(prev * 100) if prev is not None else 1000 + mix(i) % 9000
        cents = max(1, cents + (h >> 40) % 21 - 10)
        return key, cents / 100

    def replay(self, upto: int) -> dict[str, float]:
        """The prices after updates 1..``upto``."""
        state: dict[str, Any] = {}
        for seq in range(1, upto + 1):
            key, value = self.next(seq, state)
            state[key] = value
        return state


# ------------------------------------------------------------------ run --
class _Stop:
    def __init__(self) -> None:
        self.signal: int | None = None
        self.publisher: feed.Publisher | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self.publisher is not None:
            self.publisher.stopping = True


def run(args: argparse.Namespace) -> int:
    """Publish ticks until SIGTERM or Ctrl-C."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ticks = Ticks(args.seed, args.keys)
    pub = feed.Publisher(args.name, keys=max(args.keys, 1024), capacity=args.capacity)
    stop.publisher = pub
    try:
        gen = pub.snapshot.generation
        how = "resumed" if gen > 1 else "started"
        print(f"feedd: {how} {args.name!r} at seq {pub.seq} (generation {gen}, pid "
              f"{os.getpid()}{', last update sent again' if pub.resent else ''})", flush=True)
        t0, n0 = time.monotonic(), pub.seq
        while stop.signal is None:
            if args.until is not None and pub.seq >= args.until:
                time.sleep(0.1)  # idle until a signal (its handler sets stop.signal)
                continue
            if args.rate > 0:
                due = t0 + (pub.seq - n0 + 1) / args.rate
                ahead = due - time.monotonic()
                if ahead > 0:
                    time.sleep(min(ahead, 0.05))
                    continue
            key, value = ticks.next(pub.seq + 1, pub.state)
            try:
                pub.publish(key, value)
            except shmring.Timeout:
                break  # stopping while a lossless subscriber held us up
        print(f"feedd: stopped at seq {pub.seq}", flush=True)
    finally:
        pub.close()
    return 0


# --------------------------------------------------------------- status --
def status(name: str, namespace: str | None = None) -> dict[str, Any]:
    """What runs under feed ``name``: the live publisher's pid (None if
    there is none), the seq, the keys, and every subscriber."""
    out: dict[str, Any] = {"name": name, "running": False, "pid": None, "seq": None,
                           "keys": None, "generation": None, "subscribers": []}
    try:
        snap = feed.Snapshot.open(name, namespace=namespace)
    except shmring.RegionNotFound:
        return out
    try:
        out.update(seq=snap.last_seq, sent_seq=snap.sent_seq, keys=snap.nkeys,
                   generation=snap.generation)
        for ch_name, kind in zip(feed.channel_names(name)[:2], ("lossless", "lossy"),
                                 strict=True):
            try:
                ch = shmring.Channel.open(ch_name, namespace=namespace)
            except shmring.RegionNotFound:
                continue
            try:
                live = ch.region.live_pids()
                for s in ch.region.slots():
                    if s.pid not in live:
                        continue
                    if s.role == "producer" and kind == "lossless":
                        out["pid"] = s.pid
                    elif s.role == "consumer" and s.state == _layout.SLOT_ACTIVE:
                        out["subscribers"].append({"pid": s.pid, "channel": kind,
                                                   "received": s.messages, "missed": s.missed})
            finally:
                ch.close()
    finally:
        snap.close()
    out["running"] = out["pid"] is not None
    return out


def print_status(st: dict[str, Any]) -> None:
    """``status`` for a person."""
    if st["seq"] is None:
        print(f"feed {st['name']!r}: not running (no snapshot)")
        return
    who = f"publisher pid {st['pid']}" if st["running"] else "no live publisher"
    print(f"feed {st['name']!r}: {who}, seq {st['seq']}, {st['keys']} keys, "
          f"generation {st['generation']}, {len(st['subscribers'])} subscribers")
    for s in st["subscribers"]:
        print(f"  pid {s['pid']:>7}  {s['channel']:<8}  received {s['received']:>9}  "
              f"missed {s['missed']}")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="feedd.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default=DEFAULT_NAME, help="feed name (default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="publish ticks until SIGTERM or Ctrl-C")
    r.add_argument("--rate", type=float, default=1000.0,
                   help="updates per second, 0 = as fast as it can (default %(default)s)")
    r.add_argument("--keys", type=int, default=100, help="how many keys (default %(default)s)")
    r.add_argument("--seed", type=int, default=1, help="seed of the ticks (default %(default)s)")
    r.add_argument("--until", type=int, default=None, metavar="SEQ",
                   help="stop publishing at this seq and stay up")
    r.add_argument("--capacity", type=int, default=1 << 20,
                   help="ring bytes of each channel, a power of two (default %(default)s)")
    s = sub.add_parser("status", help="the live publisher, seq, keys and subscribers")
    s.add_argument("--json", action="store_true", help="print it as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; its exit status."""
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args)
        st = status(args.name)
        if args.json:
            print(json.dumps(st))
        else:
            print_status(st)
        return 0 if st["running"] else 1
    except shmring.ShmringError as e:
        print(f"feedd: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
