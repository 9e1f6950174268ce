#!/usr/bin/env python3
"""logsinkd: the sink daemon of shmring.logging.

Any number of processes log through ``shmring.logging.Handler``; this daemon
takes their records from the channel (``logsink`` by default) and writes them
to a file, rotated by the standard library's ``RotatingFileHandler``, or to
stdout::

    python logsinkd.py run --file app.log --max-bytes 10000000 --backups 5
    python logsinkd.py status --json
    python logsinkd.py unlink          # remove the channel (unread records go)

The channel is persistent: restart the daemon (after a crash, a SIGKILL, an
upgrade) and it re-opens the channel and writes what it had not read. SIGTERM
and Ctrl-C stop it cleanly: it writes what is in the ring and leaves the
channel for the next run.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
from types import FrameType

import shmring
import shmring.logging as shlog

FORMAT = "%(asctime)s %(process)d %(processName)s %(name)s %(levelname)s %(message)s"


def _handler(args: argparse.Namespace) -> logging.Handler:
    h: logging.Handler
    if args.file:
        h = logging.handlers.RotatingFileHandler(args.file, maxBytes=args.max_bytes,
                                                 backupCount=args.backups, encoding="utf-8")
    else:
        h = logging.StreamHandler(sys.stdout)
    h.setFormatter(logging.Formatter(args.format))
    return h


def run(args: argparse.Namespace) -> int:
    """Take records until SIGTERM or Ctrl-C."""
    stop = False

    def on_signal(signo: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = _handler(args)
    try:
        sink = shlog.Sink(args.channel, handlers=[out], namespace=args.namespace,
                          capacity=args.capacity)
    except shmring.RoleTaken as e:
        print(f"logsinkd: another sink runs on channel {args.channel!r} (pid {e.pid})",
              file=sys.stderr)
        return 1
    try:
        print(f"logsinkd: pid {os.getpid()} writing channel {args.channel!r} to "
              f"{args.file or 'stdout'}", file=sys.stderr, flush=True)
        while not stop:
            sink.drain(timeout=0.2)
        sink.drain()  # what is in the ring now; later records wait for the next run
    finally:
        sink.close()
        out.close()
    return 0


def status(args: argparse.Namespace) -> int:
    """Print what the running sink reports (exit 0 if it runs, 3 if not)."""
    st = shlog.sink_status(args.channel, namespace=args.namespace)
    if args.json:
        print(json.dumps(st, sort_keys=True))
    elif st["running"]:
        up = time.time() - st["started"]
        print(f"logsink {args.channel!r}: running, pid {st['pid']}, up {up:.0f} s, "
              f"{st['written']} records written, {st['drops_reported']} drops reported, "
              f"{st['pending']} waiting in the ring")
    elif st["pending"] is not None:
        print(f"logsink {args.channel!r}: not running ({st['pending']} records waiting "
              "in the ring)")
    else:
        print(f"logsink {args.channel!r}: not running")
    return 0 if st["running"] else 3


def unlink(args: argparse.Namespace) -> int:
    """Remove the channel (its unread records are lost)."""
    try:
        ch = shmring.Channel.open(args.channel, namespace=args.namespace)
    except shmring.RegionNotFound:
        print(f"logsinkd: no channel {args.channel!r}", file=sys.stderr)
        return 1
    ch.close()
    ch.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="logsinkd", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--channel", default=shlog.DEFAULT_CHANNEL,
                        help="channel name (default %(default)s)")
    common.add_argument("--namespace", default=None,
                        help="shmring namespace (default $SHMRING_NAMESPACE or 'default')")
    r = sub.add_parser("run", parents=[common], help="run the sink")
    r.add_argument("--file", help="write to this file (default: stdout)")
    r.add_argument("--max-bytes", type=int, default=0,
                   help="rotate the file at this size (default 0: never)")
    r.add_argument("--backups", type=int, default=5,
                   help="rotated files to keep (default %(default)s)")
    r.add_argument("--format", default=FORMAT, help="logging format of each line")
    r.add_argument("--capacity", type=int, default=1 << 22,
                   help="ring bytes, a power of two, when creating the channel (default 4 MiB)")
    s = sub.add_parser("status", parents=[common], help="report on the running sink")
    s.add_argument("--json", action="store_true", help="one JSON object")
    sub.add_parser("unlink", parents=[common], help="remove the channel")
    args = p.parse_args(argv)
    if args.command == "run" and (args.max_bytes < 0 or args.backups < 0):
        p.error("--max-bytes and --backups must be >= 0")
    return {"run": run, "status": status, "unlink": unlink}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
