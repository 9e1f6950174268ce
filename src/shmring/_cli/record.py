"""``shmring record CHANNEL DIR``: tee a channel into a journal.

The recorder opens the channel as a consumer and appends every message it
receives, byte for byte, to the journal in DIR (created if it does not
exist, appended to if it does). What that costs the channel's other
readers depends on the pattern:

- ``broadcast``: the recorder is one more subscriber. It *taps* the stream
  without taking anything from anyone, and sees what is sent after it
  joined (on a lossy channel, or one with a ``slow_consumer_timeout``, it
  may miss messages when it falls behind: the summary counts them).
- ``spsc``, ``mpsc``: the recorder *is* the channel's one consumer (the
  role is refused while another process holds it). Nothing else reads the
  channel while it records.
- ``mpmc``: the recorder is one more consumer among the others: it takes
  the messages it records, which the others then do not get.

How it takes messages follows from that. On spsc, mpsc and mpmc a message
is released from the ring only once it is appended (``recv_view``, append
from the ring, release): a recorder SIGKILLed at any point has lost nothing
the channel gave it. The record it held goes to the next consumer (a
recorder started again on the same journal, or on mpmc another consumer),
so the one it was appending when it died may be in the journal twice:
at-least-once, one duplicate at most per kill. On broadcast nothing would be
handed back (a subscriber that joins later starts at the newest message),
so the recorder takes batches of up to 256 copies in one call
(``recv_many``): SIGKILLed, it loses the batch in hand, which no one else
was owed.

It runs until SIGINT or SIGTERM, or until the channel's end of stream, and
then flushes the journal (``msync``) before it exits: every record it
appended is durable when it has printed its summary. Meanwhile the journal's
sync policy (``--sync``; ``interval:10ms`` for a journal it creates) bounds
what a machine crash can take. If it is killed (SIGKILL), what it appended
is still in the journal (the kernel writes a shared file mapping back), and
the journal cuts a half-written tail on open.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable

from .._channel.channel import Channel
from .._channel.endpoints import Consumer
from .._errors import EndOfStream, InvalidArgument, Timeout
from .._journal import Journal, Writer
from . import args as _types
from .stopping import POLL, Stop, stop_on_signals

#: Messages a broadcast recorder takes from the ring per call.
BATCH = 256

HELP = """\
Record every message of CHANNEL into the journal in DIR (created if missing,
appended to otherwise), bytes exactly as sent, until SIGINT/SIGTERM or the
channel's end of stream; the journal is flushed before the command exits.

Which messages it gets depends on the pattern: on a broadcast channel the
recorder is one more subscriber and taps the stream without taking anything
from the other consumers (it sees what is sent after it joined). On spsc and
mpsc it is THE consumer (refused while another process holds the role), and
on mpmc it is one consumer among the others: the messages it records are
taken from them."""

PATTERN_NOTE = {
    "broadcast": "a subscriber: it taps the stream, the other consumers still get every message",
    "spsc": "the channel's one consumer: nothing else reads it meanwhile",
    "mpsc": "the channel's one consumer: nothing else reads it meanwhile",
    "mpmc": "one more consumer: the messages it records are taken from the other consumers",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``shmring record``."""
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("channel", metavar="CHANNEL", type=_types.region_name,
                   help="the channel to record")
    p.add_argument("dir", metavar="DIR",
                   help="the journal's directory (created if it does not exist)")
    p.add_argument("--namespace", "-n", type=_types.namespace,
                   help="the channel's namespace (default: $SHMRING_NAMESPACE or 'default')")
    p.add_argument("--wait", type=_types.seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for the channel to be created (default 0: it must "
                   "exist); 'forever' waits for ever")
    p.add_argument("--sync", metavar="POLICY",
                   help="when the journal is msynced: none, always, interval:<n>ms or "
                   "bytes:<n> (default: interval:10ms for a new journal, the journal's own "
                   "policy for an existing one)")
    p.add_argument("--segment-size", type=_types.size_bytes, metavar="BYTES",
                   help="segment file size when the journal is created (64M, 1G, ...; "
                   "default: the journal's)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print nothing but errors")


#: The sync policy of a journal that ``record`` creates.
DEFAULT_SYNC = "interval:10ms"


def _journal(path: str, sync: str | None, segment_size: int | None) -> tuple[Journal, bool]:
    """The journal in ``path``, opened, or created when ``path`` does not
    exist; and whether it was created. An existing directory that holds no
    journal is refused by ``Journal.open`` (nothing is written into it)."""
    if os.path.lexists(path):
        return Journal.open(path, sync=sync), False
    kw = {} if segment_size is None else {"segment_size": segment_size}
    return Journal.create(path, sync=sync or DEFAULT_SYNC, **kw), True


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)
    return say


def run(args: argparse.Namespace) -> int:
    """Record until a stop signal or the end of stream; 0 on either."""
    say = _printer(args.quiet)
    ch = Channel.open(args.channel, wait=args.wait, namespace=args.namespace)
    try:
        j, created = _journal(args.dir, args.sync, args.segment_size)
        try:
            return _record(ch, j, args, say, created)
        except BaseException:
            if created and j.next_seq == 0:  # refused before the first record: no trace
                j.close()
                shutil.rmtree(args.dir, ignore_errors=True)
            raise
        finally:
            j.close()
    finally:
        ch.close()


def _record(ch: Channel, j: Journal, args: argparse.Namespace,
            say: Callable[[str], None], created: bool) -> int:
    w = j.writer()  # before the consumer joins: a journal another writer holds is refused
    if ch.max_message > w.max_record:
        raise InvalidArgument(
            f"channel {ch.name!r} takes messages of up to {ch.max_message:,} bytes, but a "
            f"record of journal {args.dir} holds at most {w.max_record:,}: record into a "
            "journal with larger segments (--segment-size, for a new journal)")
    rx = ch.consumer()
    first = j.next_seq
    t0 = time.monotonic()
    say(f"recording channel {ch.name!r} ({ch.pattern}) into {args.dir} "
        f"({'new journal' if created else 'appending'}), from seq {first}: "
        f"the recorder is {PATTERN_NOTE[ch.pattern]}")
    take = _batches if ch.pattern == "broadcast" else _one_by_one
    with stop_on_signals() as stop:
        count, size, ended = take(rx, w, stop)
        durable = w.flush()
    why = "end of stream" if ended else "stopped"
    dt = time.monotonic() - t0
    missed = rx.missed
    rx.close()
    last = f"seq {first}..{first + count - 1}" if count else "nothing"
    say(f"recorded {count:,} messages ({size:,} bytes, {last}) in {dt:.1f} s: {why}; "
        f"durable: every record below seq {durable}"
        + (f"; missed {missed:,} (the recorder fell behind: the channel is lossy, or "
           "untethered it after its slow_consumer_timeout)" if missed else ""))
    return 0


def _batches(rx: Consumer, w: Writer, stop: Stop) -> tuple[int, int, bool]:
    """Append copies taken in batches (broadcast); (messages, bytes, whether
    the stream ended)."""
    count = size = 0
    while not stop.requested:
        try:
            batch = rx.recv_many(BATCH, timeout=POLL)
        except Timeout:
            continue
        except EndOfStream:
            return count, size, True
        for data in batch:
            w.append(data)
            size += len(data)
        count += len(batch)
    return count, size, False


def _one_by_one(rx: Consumer, w: Writer, stop: Stop) -> tuple[int, int, bool]:
    """Append each message from the ring, then release it (spsc, mpsc,
    mpmc): what is taken from the channel is in the journal first."""
    count = size = 0
    recv_view, append = rx.recv_view, w.append
    while not stop.requested:
        try:
            view = recv_view(POLL)
        except Timeout:
            continue
        except EndOfStream:
            return count, size, True
        with view as data:
            append(data)
            size += len(data)
        count += 1
    return count, size, False
