"""``shmring replay DIR CHANNEL``: play a journal's records back into a
channel, each record one message, its bytes exactly as they were recorded.

Opening or creating is the user's explicit choice, never a guess:

- by default the channel must exist (another process created it, say the
  consumer that wants the replay), and the command opens it as a producer
  (``--wait`` waits for it to be created);
- ``--create`` creates it (refused if it exists: the replay never writes
  into a channel that the user did not name for it by mistake), with
  ``--pattern``, ``--capacity`` and ``--max-message``, and then waits for
  the first consumer before it sends anything: a broadcast consumer sees
  only what is sent after it joined, and a channel whose only user exits is
  removed.

It sends from ``--from`` (the journal's first record by default) to the
records that are there when it starts, or on with ``--follow`` until
SIGINT/SIGTERM. ``--rate`` paces it to so many records per second. At the
end, ``--end-of-stream`` (the default with ``--create``) marks the end of
the stream, so that consumers drain and then see ``EndOfStream``.
"""

from __future__ import annotations

import argparse
import time

from .._channel.channel import Channel
from .._channel.endpoints import Producer
from .._errors import InvalidArgument, MessageTooLarge, Timeout
from .._journal import Journal
from . import args as _types
from .stopping import POLL, Stop, stop_on_signals

HELP = """\
Send the records of the journal in DIR into CHANNEL, one message each, bytes
exactly as recorded: from --from N (default: the first record) to the last
record there when it starts (--follow: and the ones appended after, until
SIGINT/SIGTERM).

By default CHANNEL must exist and is opened as a producer (--wait waits for
it). --create creates it instead (an error if it exists) and waits for its
first consumer before it sends anything."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring replay``."""
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("dir", metavar="DIR", help="the journal's directory")
    p.add_argument("channel", metavar="CHANNEL", type=_types.region_name,
                   help="the channel to send into")
    p.add_argument("--from", dest="from_seq", type=_types.seq_number, metavar="N",
                   help="first sequence number to send (default: the journal's first)")
    p.add_argument("--count", type=_types.positive_int, metavar="N",
                   help="send at most N records")
    p.add_argument("--rate", type=_types.positive_float, metavar="R",
                   help="at most R records per second (default: as fast as the channel "
                   "takes them)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="after the last record, send new ones as they are appended, "
                   "until SIGINT/SIGTERM")
    p.add_argument("--namespace", "-n", type=_types.namespace,
                   help="the channel's namespace (default: $SHMRING_NAMESPACE or 'default')")
    p.add_argument("--wait", type=_types.seconds, metavar="SECONDS",
                   help="without --create: wait this long for the channel to exist "
                   "(default 0); with --create: for its first consumer (default forever)")
    p.add_argument("--create", action="store_true",
                   help="create the channel (an error if it exists) instead of opening it")
    p.add_argument("--pattern", choices=("spsc", "mpsc", "mpmc", "broadcast"), default="spsc",
                   help="with --create: the channel's pattern (default spsc)")
    p.add_argument("--capacity", type=_types.size_bytes, default=1 << 20, metavar="BYTES",
                   help="with --create: ring size, a power of two (default 1M)")
    p.add_argument("--max-message", type=_types.size_bytes, metavar="BYTES",
                   help="with --create: largest message (default: a quarter of the capacity)")
    p.add_argument("--end-of-stream", action=argparse.BooleanOptionalAction, default=None,
                   help="mark the end of the stream when done (default: yes with --create, "
                   "no otherwise, since other producers may still be sending)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


def _check(args: argparse.Namespace) -> None:
    """Refuse the options that only --create reads, without it."""
    if not args.create:
        for opt in ("pattern", "capacity", "max_message"):
            if getattr(args, opt) != _DEFAULTS[opt]:
                raise InvalidArgument(f"--{opt.replace('_', '-')} is for --create only: "
                                      "an existing channel keeps its own")


def _channel(args: argparse.Namespace) -> Channel:
    if not args.create:
        return Channel.open(args.channel, wait=args.wait or 0.0, namespace=args.namespace)
    return Channel.create(args.channel, capacity=args.capacity, pattern=args.pattern,
                          max_message=args.max_message, namespace=args.namespace)


_DEFAULTS = {"pattern": "spsc", "capacity": 1 << 20, "max_message": None}


def _wait_consumer(ch: Channel, wait: float | None, stop: Stop) -> bool:
    """Wait for the first consumer of a created channel; False if stopped."""
    deadline = None if wait is None else time.monotonic() + wait
    while ch.consumers == 0:
        if stop.requested:
            return False
        if deadline is not None and time.monotonic() >= deadline:
            err = Timeout(f"no consumer opened channel {ch.name!r} within {wait:g} s")
            err.channel, err.timeout = ch.name, wait
            raise err
        time.sleep(0.01)
    return True


def run(args: argparse.Namespace) -> int:
    """Replay the journal into the channel; 0 when every record was sent."""
    _check(args)
    j = Journal.open(args.dir)
    try:
        ch = _channel(args)
        try:
            return _replay(j, ch, args)
        finally:
            ch.close()
    finally:
        j.close()


def _replay(j: Journal, ch: Channel, args: argparse.Namespace) -> int:
    tx = ch.producer()
    end_of_stream = args.create if args.end_of_stream is None else args.end_of_stream
    sent = size = 0
    with stop_on_signals() as stop:
        if args.create and not _wait_consumer(ch, args.wait, stop):
            return 0
        end = None if args.follow else j.next_seq
        t0 = time.monotonic()
        reader = j.reader(from_seq=args.from_seq)
        first = last = -1
        try:
            while not stop.requested and (end is None or reader.seq < end) and (
                    args.count is None or sent < args.count):
                try:
                    seq, data = reader.read(timeout=POLL)
                except Timeout:
                    continue
                if args.rate is not None and not _pace(t0 + sent / args.rate, stop):
                    break
                if not _send(tx, seq, data, ch, stop):
                    break
                first, last = (seq if first < 0 else first), seq
                sent += 1
                size += len(data)
        finally:
            reader.close()
        if end_of_stream and not stop.requested:
            ch.close_send()
    dt = time.monotonic() - t0
    if not args.quiet:
        what = f"seq {first}..{last}" if sent else "nothing"
        print(f"replayed {sent:,} records ({size:,} bytes, {what}) into channel "
              f"{ch.name!r} ({ch.pattern}) in {dt:.1f} s"
              + ("; end of stream marked" if end_of_stream and not stop.requested else "")
              + ("; stopped by signal" if stop.requested else ""), flush=True)
    return 0


def _pace(when: float, stop: Stop) -> bool:
    """Sleep until ``when``; False if a stop signal came first."""
    while (left := when - time.monotonic()) > 0:
        if stop.requested:
            return False
        time.sleep(min(left, POLL))
    return not stop.requested


def _send(tx: Producer, seq: int, data: bytes, ch: Channel, stop: Stop) -> bool:
    """Send record ``seq``, waiting for room as long as it takes; False if a
    stop signal came first (the record was not sent)."""
    while True:
        try:
            tx.send(data, timeout=POLL)
            return True
        except Timeout:
            if stop.requested:
                return False
        except MessageTooLarge as e:
            err = MessageTooLarge(
                f"record {seq} ({len(data):,} bytes) is larger than channel {ch.name!r} "
                f"takes ({ch.max_message:,} bytes): replay into a channel made with a larger "
                "max_message (--create --max-message)")
            err.channel, err.size, err.limit = ch.name, len(data), ch.max_message
            raise err from e
