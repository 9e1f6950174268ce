"""The consumer half of the two-program example (see README.md).

It creates the channel, so it starts first and says ``ready`` once the
producer may open it; then it receives until the producer closes the stream
and prints one summary line::

    $ python examples/consumer.py --name demo
    ready
    received 1000 messages, last=999
"""

from __future__ import annotations

import argparse
import sys

import shmring


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Receive numbered messages from a shmring channel.")
    ap.add_argument("--name", default="example", help="channel name (default: example)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="give up after this many seconds without a message (default: 30)")
    args = ap.parse_args(argv)

    count, last = 0, None
    with shmring.Channel.create(args.name, capacity=1 << 16, pattern="spsc") as ch:
        try:
            rx = ch.consumer()
            print("ready", flush=True)
            while True:
                try:
                    msg = rx.recv(timeout=args.timeout)
                except shmring.EndOfStream:  # the producer called close_send()
                    break
                except shmring.Timeout:
                    print(f"no message for {args.timeout} s: is the producer running?",
                          file=sys.stderr)
                    return 1
                n = int(msg)
                if n != count:
                    print(f"expected message {count}, got {n}", file=sys.stderr)
                    return 1
                count, last = count + 1, n
        finally:
            ch.unlink()  # the name goes; nothing is left in /dev/shm
    print(f"received {count} messages, last={last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
