"""The producer of the durable example (see README.md): numbered events on a
broadcast channel, for a recorder to tap.

It creates the broadcast channel ``--name``, waits for its first consumer
(a broadcast consumer sees what is sent after it joined, so sending before
the recorder is there would lose events), then sends ``--count`` events,
``--rate`` a second, each a plain dict sent with ``send_obj``::

    {"seq": 41, "time": 1764645600.123, "sensor": "s1", "value": 20.5}

and marks the end of the stream. A line ``sent N`` every ``--every`` events
says how far it got::

    $ python examples/durable/producer.py --count 20000 --rate 2000
    waiting for a consumer of 'events'
    sent 1000
    ...
"""

from __future__ import annotations

import argparse
import sys
import time

import shmring


def event(seq: int) -> dict[str, object]:
    """Event ``seq``: what a sensor reported (the value is a function of seq,
    so a checker can tell a wrong event from a right one)."""
    return {"seq": seq, "time": time.time(), "sensor": f"s{seq % 4}",
            "value": round(20 + (seq % 100) / 10, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Send numbered events on a broadcast channel.")
    ap.add_argument("--name", default="events", help="channel name (default: events)")
    ap.add_argument("--count", type=int, default=20_000, help="events to send (default 20,000)")
    ap.add_argument("--rate", type=float, default=2000.0,
                    help="events per second (default 2,000)")
    ap.add_argument("--every", type=int, default=1000,
                    help="print 'sent N' every this many events (default 1,000)")
    ap.add_argument("--wait", type=float, default=60.0,
                    help="seconds to wait for the first consumer (default 60)")
    args = ap.parse_args(argv)

    with shmring.Channel.create(args.name, capacity=1 << 20, pattern="broadcast") as ch:
        tx = ch.producer()
        print(f"waiting for a consumer of {args.name!r}", flush=True)
        deadline = time.monotonic() + args.wait
        while ch.consumers == 0:
            if time.monotonic() > deadline:
                print(f"no consumer within {args.wait:g} s", file=sys.stderr)
                return 2
            time.sleep(0.01)
        start = time.monotonic()
        for seq in range(args.count):
            if (late := start + seq / args.rate - time.monotonic()) > 0:
                time.sleep(late)
            tx.send_obj(event(seq), timeout=30)
            if (seq + 1) % args.every == 0:
                print(f"sent {seq + 1}", flush=True)
        ch.close_send()
    print(f"done: sent {args.count} events", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
