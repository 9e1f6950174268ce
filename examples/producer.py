"""The producer half of the two-program example (see README.md).

It opens the channel the consumer created, sends ``--count`` numbered
messages, then closes the stream so that the consumer knows it has all::

    $ python examples/producer.py --name demo --count 1000
    sent 1000 messages
"""

from __future__ import annotations

import argparse
import sys

import shmring


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Send numbered messages into a shmring channel.")
    ap.add_argument("--name", default="example", help="channel name (default: example)")
    ap.add_argument("--count", type=int, default=1000, help="messages to send (default: 1000)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="give up after this many seconds without room (default: 30)")
    args = ap.parse_args(argv)

    try:
        ch = shmring.Channel.open(args.name)
    except shmring.RegionNotFound:
        print(f"no channel {args.name!r}: start the consumer first", file=sys.stderr)
        return 2
    with ch:
        tx = ch.producer()
        for i in range(args.count):
            tx.send(b"%d" % i, timeout=args.timeout)  # waits while the ring is full
        ch.close_send()  # end of stream: the consumer drains, then stops
    print(f"sent {args.count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
