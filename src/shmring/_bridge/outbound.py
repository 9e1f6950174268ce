"""The exporting side of one stream: a local channel read out to one peer.

The stream's thread is a consumer of the local channel. It reads records
ahead without releasing them (``ConsumerCore._ahead_packed``: packed as a
batch's frames, ``unacked.py``), sends them in
batches, and releases them (``_settle``) only when the peer acknowledges
that they are in its ring: whatever is not acknowledged is still in the
local ring, so a cut link or a killed bridge loses nothing. It keeps at
most ``window`` records and ``window_bytes`` bytes unacknowledged (the
credit window): a slow remote consumer stops it reading, the local ring
fills, and the local producer waits, as it would for a slow local consumer.

What it sent and what is unacknowledged stay in its memory too, so after a
reconnect it resends from the peer's resume point without reading the ring
again; a bridge started again reads them from the ring (spsc, mpsc: the
head did not move; mpmc: recovery handed the dead bridge's records back;
broadcast: a durable subscription, below) and the peer drops the keys it
has.

On a lossless broadcast channel the stream's consumer is a durable
subscription (``Channel._durable_consumer``) whose tag is :func:`stream_tag`
of the importing peer's bridge name and the channel's: if this bridge is
killed, its slot stays for ``hold`` seconds (the producer waits for it), and
the bridge started again adopts it and reads on from the oldest record the
peer had not acknowledged. Without it the slot would be freed, the producer
would overwrite those records, and the new bridge would join at the newest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from bisect import bisect_right
from typing import Any

from .._channel.channel import Channel
from .._errors import Broken, EndOfStream, LeaseRevoked, ShmringError
from . import wire
from .queues import QueueCounts
from .transport import Link
from .unacked import Chunk, Unacked

log = logging.getLogger("shmring.bridge")


#: Records per DATA message. Per message, ZeroMQ and the two bridges' I/O
#: threads cost far more than a record does: 2,048 crossed 64 B messages at
#: 3.3-3.8 M/s where 256 gave 1.7-1.9 M (benchmarks.bridge, one session),
#: and the default window of 8,192 still keeps four batches in flight.
BATCH = 2048
#: Payload bytes per DATA message (a larger record goes alone).
BATCH_BYTES = 1 << 20
#: A record at least this long is sent from the ring in place, not copied
#: out first (``_ahead_packed(..., inplace)``): ZeroMQ reads it from the
#: mapping while it is read ahead and not settled, and a chunk is settled
#: only once ZeroMQ let go of every send of it (``Chunk.sent_out``). The
#: copy it saves was a quarter of an exporting bridge's cycles at 1 MiB.
INPLACE = 256 << 10
#: While an acknowledged in-place record waits for ZeroMQ to let go of it,
#: the stream looks this often (seconds) whether it is being stopped.
SENT_OUT_WAIT = 1.0
#: Seconds a stopping stream gives ZeroMQ to let go of its in-place records.
STOP_SENT_OUT_WAIT = 2.0
#: Seconds without an acknowledgement after which unacknowledged records
#: are sent again (the peer drops what it has).
RESEND_AFTER = 1.0


#: Seconds a killed bridge's broadcast subscription is held for the bridge
#: started again (``shmring bridge --hold``).
HOLD = 60.0


def stream_tag(peer_name: str, channel: str) -> int:
    """The durable subscription tag of the stream of ``channel`` to the
    bridge named ``peer_name``: a stable 64-bit hash (the same in every
    process, unlike ``hash``)."""
    data = json.dumps([peer_name, channel]).encode()  # unambiguous, whatever the names
    digest = hashlib.blake2b(data, digest_size=8, person=b"shmring-export").digest()
    return int.from_bytes(digest, "little")


class Outbound:
    """Channel ``name`` read out to ``peer`` (the bridge named
    ``peer_name``) over ``link``. A lossless broadcast channel is read by a
    durable subscription held ``hold`` seconds after this process dies."""

    def __init__(self, link: Link, peer: bytes, channel: Channel, *, window: int,
                 window_bytes: int, peer_name: str = "", hold: float = HOLD,
                 counts: QueueCounts | None = None) -> None:
        self.link, self.peer, self.channel, self.name = link, peer, channel, channel.name
        self.window, self.window_bytes = window, window_bytes
        self.pattern = channel.pattern
        self.ordered = self.pattern != "mpmc"
        # The epoch: the ring's creation time where keys are ring positions;
        # a fresh random one per stream on mpmc (keys are a count).
        self.epoch = (channel.region.created_ns if self.ordered
                      else int.from_bytes(os.urandom(8), "little") >> 1) or 1
        self.inbox: queue.SimpleQueue[tuple[bytes, Any]] = queue.SimpleQueue()
        self._durable = self.pattern == "broadcast" and not channel.region.lossy and hold > 0
        if self._durable:
            self._consumer = channel._durable_consumer(stream_tag(peer_name, self.name), hold)
        else:
            self._consumer = channel.consumer()
        # A queue's ring: acknowledged records count as taken from it
        # (queues.py), after they are released, as a local get counts.
        self._counts = counts
        self._count = 0  # mpmc: the last seq given
        self._high = 0  # the highest position read
        # Ordered patterns: the peer holds every key up to this one (its
        # resume point); records read at or below it are settled, not sent.
        self._floor = 0
        self._in_order = True  # positions of _unacked increase (always, but on mpmc)
        # What was read ahead and not acknowledged, in key order (unacked.py).
        self._unacked = Unacked()
        self._prev = 0  # key sent just before the next unsent chunk (the peer's resume point)
        self._acked = 0
        self._last_ack = time.monotonic()
        self._eos = False
        self._eos_sent = False
        self.finished = False
        self.error: str | None = None
        self._stop = threading.Event()
        self.sent_records = 0
        self.sent_batches = 0  # DATA messages sent
        self.revoked = 0
        self.acked_records = 0
        self._thread = threading.Thread(target=self._run, name=f"shmring-bridge-out {self.name}",
                                        daemon=True)

    def start(self, resume: tuple[int, int]) -> None:
        """Start sending from the peer's resume point ``(epoch, seq)``."""
        self.inbox.put((wire.SUB, resume))
        self._thread.start()

    def retarget(self, link: Link, peer: bytes) -> None:
        """Go on with ``peer`` (the same bridge, restarted) on ``link``."""
        self.link, self.peer = link, peer
        self.inbox.put((b"r", None))

    def stop(self, *, keep: bool = True) -> None:
        """Stop the thread and close the consumer: unacknowledged records go
        back to the ring (or stay there). A durable subscription (lossless
        broadcast) not finished stays held for its hold unless ``keep`` is
        False (the peer no longer wants the channel)."""
        self._stop.set()
        self.inbox.put((b"", None))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)
        # Records held in place and still queued in ZeroMQ: let it send (or
        # drop) them before they go back to the ring, where another consumer
        # may take and release them (mpmc) under that send.
        until = time.monotonic() + STOP_SENT_OUT_WAIT
        for c in list(self._unacked.chunks):
            if c.in_place and not c.sent_out(max(0.0, until - time.monotonic())):
                log.warning("export %r: stopped with a record ZeroMQ still holds", self.name)
                break
        with contextlib.suppress(ShmringError):
            if self._durable and keep and not self.finished:
                # Not done: the subscription stays held for the bridge started
                # again (or a new stream to the same peer), as after a kill.
                self.channel._leave(self._consumer)
            else:
                self._consumer.close()
        if self._counts is not None:
            self._counts.close()

    # ------------------------------------------------------------ thread --
    def _run(self) -> None:
        self._out, self._out_link = self.link.sender(), self.link
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as e:  # reported to the peer; the daemon logs it
            log.exception("bridge export %r", self.name)
            self.error = f"{type(e).__name__}: {e}"
            self._send(wire.ERROR, wire.dump({"error": type(e).__name__, "message": str(e)}))

    def _step(self) -> None:
        busy = bool(self._unacked)
        self._drain(block=False)
        room = self.window - len(self._unacked)
        room_bytes = self.window_bytes - self._unacked.bytes
        if self.finished:
            self._drain(block=True, timeout=0.5)
            return
        if not self._eos and room > 0 and room_bytes > 0:
            try:
                keys, poss, lens, body = self._consumer._ahead_packed(
                    min(room, BATCH), min(room_bytes, BATCH_BYTES), 0.002 if busy else 0.05,
                    -1 if self.ordered else self._count, INPLACE)
            except EndOfStream:
                self._eos = True
                keys = poss = lens = bytearray()
                body = b""
            except Broken as e:
                if isinstance(e, LeaseRevoked):
                    raise
                self.error = str(e)
                self._send(wire.ERROR, wire.dump({"error": "Broken", "message": str(e)}))
                self._drain(block=True, timeout=0.5)
                return
            if keys:
                self._keep(Chunk(keys, poss, lens, body))
        else:
            self._drain(block=True, timeout=0.05)
        self._flush()
        if self._eos and not self._eos_sent and self._unacked.all_sent():
            last = self._unacked.last_key() if self._unacked else self._acked
            self._send(wire.EOS, wire.key(self.epoch, last))
            self._eos_sent = True
        if self._unacked and time.monotonic() - self._last_ack > RESEND_AFTER:
            # Nothing acknowledged for a while: the peer may have lost a
            # batch at the end (a gap it cannot see). Send everything again.
            self._rewind(self._acked)
            self._last_ack = time.monotonic()
            if self._eos:
                self._eos_sent = False

    def _keep(self, c: Chunk) -> None:
        """Hold records just read until the peer acknowledges them."""
        if self.ordered:  # keys are positions + 1 (0: "none yet")
            if c.first <= self._floor:
                # The peer has these (a dead bridge read them, we read them
                # again): settle them, do not send them.
                k = bisect_right(c.keys, self._floor)
                self._consumer._settle(c.poss[k - 1])
                rest = c.cut(k)[1]
                if rest is None:
                    return
                c = rest
            self._high = c.poss[-1]
        else:
            poss = c.poss
            if min(poss) < self._high or list(poss) != sorted(poss):
                self._in_order = False  # a record handed back: out of order
            self._high = max(self._high, max(poss))
            self._count += c.n
        self._unacked.add(c)

    def _flush(self) -> None:
        """Send what was read ahead and not sent yet, one DATA batch a chunk."""
        missed = self._consumer.missed
        while (c := self._unacked.next_unsent()) is not None:
            t = self._send(wire.DATA, c.index(self.epoch, self._prev, missed), c.body,
                           track=c.in_place)
            if t is not None:
                c.trackers.append(t)
            self._prev = c.last
            self.sent_records += c.n
            self.sent_batches += 1

    def _drain(self, *, block: bool, timeout: float = 0.0) -> None:
        try:
            kind, arg = self.inbox.get(timeout=timeout) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if kind == wire.ACK:
                self._ack(*arg)
            elif kind == wire.SUB:
                self._resume(*arg)
            elif kind == b"r" and self._out_link is not self.link:
                self._out, self._out_link = self.link.sender(), self.link
            try:
                kind, arg = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _ack(self, epoch: int, seq: int) -> None:
        if epoch != self.epoch:
            return
        u = self._unacked
        done = u.ack(seq)
        if done:
            n = sum(c.n for c in done)
            last_pos = done[-1].poss[-1] if self._in_order else max(max(c.poss) for c in done)
            self._acked = seq
            self._last_ack = time.monotonic()
            self.acked_records += n
            if not self._sent_out(done):
                return  # stopping: the records stay in the ring, unreleased
            self._settle(last_pos)
            if self._counts is not None:
                self._counts.taken(n)
        if self._eos and not u and seq >= self._acked and not self.finished:
            # All acknowledged after the end of the stream: this stream is
            # done; let go of the channel (a planned end, not a fault).
            self.finished = True
            self._consumer.close()
            self.channel.close()

    def _sent_out(self, done: list[Chunk]) -> bool:
        """Wait until ZeroMQ let go of every send of the in-place records in
        ``done`` (acknowledged, about to be released: the producer may then
        write over them). An acknowledgement comes after the peer received a
        send, so this is at once but for a send still queued when the peer
        said it had the records already (a resume point); ZeroMQ sends or
        drops such a message with its connection. False if the stream is
        stopping first."""
        for c in done:
            while not c.sent_out(SENT_OUT_WAIT):
                if self._stop.is_set():
                    return False
                log.debug("export %r: waiting for ZeroMQ to send a record held in place",
                          self.name)
        return True

    def _settle(self, acked_pos: int) -> None:
        """Release the acknowledged records. ``_settle(k)`` releases every
        record read ahead with a position <= k; on mpmc a record handed back
        by a recovery and read after newer ones has a lower position than
        they, so the release stops below the oldest unacknowledged one
        (acknowledged records above it are released by a later call)."""
        k = acked_pos
        if not self.ordered and self._unacked:
            low = self._unacked.first_pos() if self._in_order else self._unacked.low_pos()
            k = min(k, low - 1)
        if k >= 0:
            try:
                self._consumer._settle(k)
            except LeaseRevoked:
                # Held past the channel's lease (a remote slower than it):
                # the supervisor handed some back, and another consumer may
                # deliver them again. Export mpmc channels with lease=None.
                self.revoked += 1
                log.warning("export %r: records held past the channel's lease were handed "
                            "back (create it with lease=None to export it)", self.name)
        if not self._unacked:
            self._in_order = True

    def _resume(self, epoch: int, seq: int) -> None:
        """The peer has ``(epoch, seq)``: settle what it has, send the rest."""
        if epoch == self.epoch and seq:
            self._ack(epoch, seq)
            self._rewind(seq)
            self._floor = max(self._floor, seq)
        else:
            self._rewind(0)
        if self._eos:
            self._eos_sent = False

    def _rewind(self, prev: int) -> None:
        self._unacked.rewind()
        self._prev = prev

    def _send(self, kind: bytes, *frames: Any, track: bool = False) -> Any:
        return self._out.send(self.peer, [kind, self.name.encode(), *frames], track=track)

    def status(self) -> dict[str, Any]:
        """What ``shmring bridge --status`` shows of this stream."""
        return {"channel": self.name, "pattern": self.pattern, "sent": self.sent_records,
                "batches": self.sent_batches, "acked": self.acked_records,
                "unacked": len(self._unacked),
                "finished": self.finished, "error": self.error}
