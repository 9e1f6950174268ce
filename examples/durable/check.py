"""The checker of the durable example (see README.md): receive a replayed
channel and check that it is the producer's stream from its start.

It opens channel ``NAME`` (waiting for it to be created), receives events
with ``recv_obj`` until the end of the stream, and checks that event ``i``
has ``seq`` ``i`` and the sensor and value the producer computes from it,
with times that never go back. It prints one line and exits 0 when all of
that holds, 1 otherwise::

    $ python examples/durable/check.py events-replay
    received 12345 events: seq 0..12344 in order, none missing, each as sent
"""

from __future__ import annotations

import argparse
import sys

from producer import event

import shmring


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check a replayed stream of events.")
    ap.add_argument("name", help="the channel the journal is replayed into")
    ap.add_argument("--wait", type=float, default=60.0,
                    help="seconds to wait for the channel to appear (default 60)")
    args = ap.parse_args(argv)

    count, last_time = 0, 0.0
    with shmring.Channel.open(args.name, wait=args.wait) as ch:
        rx = ch.consumer()
        try:
            while True:
                ev = rx.recv_obj(timeout=60)
                want = event(count)
                if (ev["seq"], ev["sensor"], ev["value"]) != (count, want["sensor"],
                                                              want["value"]):
                    print(f"event {count} is wrong: {ev!r}", file=sys.stderr)
                    return 1
                if ev["time"] < last_time:
                    print(f"event {count} went back in time: {ev!r}", file=sys.stderr)
                    return 1
                count, last_time = count + 1, ev["time"]
        except shmring.EndOfStream:
            pass
    if not count:
        print("received no events", file=sys.stderr)
        return 1
    print(f"received {count} events: seq 0..{count - 1} in order, none missing, each as sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
