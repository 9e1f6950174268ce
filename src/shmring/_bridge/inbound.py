"""The importing side of one stream: records from a peer into a local ring.

The stream's thread is the producer of a local ring the bridge created to
the exported channel's shape (pattern, capacity, largest message, lossy)
and made persistent: a ring whose records were acknowledged to the peer is
not removed when the bridge stops or dies, even if no local consumer has it
open yet. It commits each batch with ``ProducerCore._send_fed_packed`` (from the
frames as received, no Python object per record), which keeps
the key of the last record committed in the ring's own header, exact
whatever instant the bridge dies at (``_core.fed_state``); it then
acknowledges that key. A record whose key it already has (a resend) is
dropped; a batch that does not follow the last key it has (a batch was
lost on the way) makes it ask the peer to resume from that key.

Backpressure: that call waits for space in the local ring, and while it
waits nothing is acknowledged, so the peer's credit window fills and the
peer stops reading its own ring.
"""

from __future__ import annotations

import bisect
import logging
import os
import queue
import threading
import time
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._errors import Closed, InvalidArgument, ShmringError
from . import wire
from .feed import fed_state, send_fed_packed
from .queues import QueueCounts
from .transport import Link

log = logging.getLogger("shmring.bridge")

#: Seconds between two resume requests for the same gap.
RESUB_AFTER = 0.5


class Inbound:
    """The local ring of channel ``name``, fed from ``peer`` over ``link``."""

    def __init__(self, link: Link, peer: bytes, channel: Channel,
                 counts: QueueCounts | None = None) -> None:
        self.link, self.peer, self.channel, self.name = link, peer, channel, channel.name
        self.inbox: queue.SimpleQueue[tuple[bytes, Any]] = queue.SimpleQueue()
        self._producer = channel.producer()
        self._counts = counts  # a queue's ring: committed records count as put
        self._broadcast = channel.pattern == "broadcast"
        self._upstream: int | None = None  # the exporter's missed total, as last told
        self.upstream_missed = 0  # gaps numbered into the ring for it
        self._buf = channel.region._mapping()
        self.epoch, self.seq = fed_state(self._buf)
        self._resub_at = 0.0
        self._stop = threading.Event()
        self.received = 0
        self.committed = 0
        self.duplicates = 0
        self.acks = 0  # ACK messages sent
        self.eos = bool(_core.load32(self._buf, L.OFF_EOS))
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"shmring-bridge-in {self.name}",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread and ask the peer for what this ring lacks (a
        stream feeds the ring again: it is no longer broken)."""
        self.set_broken(False)
        self._thread.start()

    def resume_point(self) -> tuple[int, int]:
        """The key of the last record in this ring (what SUB says)."""
        return self.epoch, self.seq

    def set_broken(self, broken: bool) -> None:
        """Mark the local ring broken (consumers get Broken once they have
        read what it holds) while the link is down past its timeout, and
        clear it when the link is back."""
        if self.channel.closed:
            return
        _core.store32(self._buf, L.OFF_BROKEN, 1 if broken else 0)
        _core.wake(self._buf, L.OFF_DATA_FUTEX)
        _core.wake(self._buf, L.OFF_SPACE_FUTEX)

    def idle(self) -> bool:
        """True when no other live process has the local ring open."""
        try:
            return self.channel.closed or not (self.channel.region.live_pids() - {os.getpid()})
        except ShmringError:
            return True

    def retarget(self, link: Link, peer: bytes) -> None:
        """Go on with ``peer`` (the same bridge, restarted) on ``link``: a
        live peer feeds the ring again, so it is no longer broken."""
        self.link, self.peer = link, peer
        self.set_broken(False)
        self.inbox.put((b"r", None))

    def stop(self) -> None:
        """Stop the thread and close the producer (the ring stays)."""
        self._stop.set()
        self.inbox.put((b"", None))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)
        try:
            self._producer.close()
            self.channel.close()
            if self._counts is not None:
                self._counts.close()
        except ShmringError:
            pass

    # ------------------------------------------------------------ thread --
    def _run(self) -> None:
        self._out, self._out_link = self.link.sender(), self.link
        self._send(wire.SUB, wire.key(self.epoch, self.seq))
        try:
            while not self._stop.is_set():
                try:
                    kind, arg = self.inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == wire.DATA:
                    self._data(arg)
                elif kind == wire.EOS:
                    self._eos(*arg)
                elif kind == wire.SUB:
                    self._send(wire.SUB, wire.key(self.epoch, self.seq))
                elif kind == b"r":  # a restarted exporter: tell it where the ring stands
                    if self._out_link is not self.link:
                        self._out, self._out_link = self.link.sender(), self.link
                    self._send(wire.SUB, wire.key(self.epoch, self.seq))
        except Exception as e:
            log.exception("bridge import %r", self.name)
            self.error = f"{type(e).__name__}: {e}"

    def _data(self, b: wire.Batch) -> None:
        n = len(b)
        self.received += n
        if self.eos:
            return
        if self._broadcast:
            self._count_upstream_missed(b.missed)
        if b.epoch != self.epoch:
            if b.prev != 0:  # the middle of another epoch: ask for its start
                self._resub()
                return
            start = 0
        else:
            if b.prev > self.seq:  # a batch between was lost
                self._resub()
                return
            start = bisect.bisect_right(b.seqs, self.seq)  # records we have: dropped
            self.duplicates += start
            if start == n:
                self._ack()
                return
        done = start
        while done < n and not self._stop.is_set():
            try:
                k = self._commit(b, done)
            except Closed:
                self.error = "the local ring was closed for sending"
                return
            except InvalidArgument as e:  # a malformed batch: drop it, ask again
                log.warning("import %r: %s", self.name, e)
                self._resub()
                return
            if k:
                done += k
                self.epoch, self.seq = b.epoch, b.seqs[done - 1]
                self.committed += k
                self._ack()
        self._resub_at = 0.0

    def _count_upstream_missed(self, missed: int) -> None:
        """What the exporting bridge's subscription missed since the last
        batch (each batch says its running total) is numbered into the
        local ring as a gap before the next message, so every local
        subscriber that reads past it counts it in its ``missed``, as it
        counts what it missed itself. The first batch of this stream sets
        the baseline; a total that went down is a new subscription upstream
        (its bridge was started again), counting from zero."""
        last, self._upstream = self._upstream, missed
        if last is None:
            return
        gap = missed - last if missed >= last else missed
        if gap:
            self._producer._skip_msgno(gap)
            self.upstream_missed += gap

    def _commit(self, b: wire.Batch, skip: int) -> int:
        """Commit the records of ``b`` but its first ``skip`` (waiting up to
        0.2 s for room); how many were committed.

        A queue's records are counted as put just before they are committed,
        as a put counts before it writes (a getter may take one at once:
        counted after, it could count below zero, or a ``task_done`` more
        than was put), and those that did not fit are uncounted again. The
        wait for room comes first, with nothing counted: a bridge killed
        while it waits leaves the counts right."""
        counts, m = self._counts, len(b) - skip
        if counts is None:
            return send_fed_packed(self._producer, b, skip, 0.2)
        if not self._producer._wait(0.2, b.lens[skip]):
            return 0
        counts.put(m)
        k = 0
        try:
            k = send_fed_packed(self._producer, b, skip, 0)  # what fits now
        finally:
            if k < m:
                counts.unput(m - k)
        return k

    def _eos(self, epoch: int, last: int) -> None:
        if self.eos:
            self._ack()
            return
        if (epoch == self.epoch and last == self.seq) or last == 0:
            self.eos = True
            self.channel.close_send()
            self._ack()
        else:
            self._resub()

    def _resub(self) -> None:
        now = time.monotonic()
        if now >= self._resub_at:
            self._resub_at = now + RESUB_AFTER
            self._send(wire.SUB, wire.key(self.epoch, self.seq))

    def _ack(self) -> None:
        self.acks += 1
        self._send(wire.ACK, wire.key(self.epoch, self.seq))

    def _send(self, kind: bytes, *frames: Any) -> None:
        self._out.send(self.peer, [kind, self.name.encode(), *frames])

    def status(self) -> dict[str, Any]:
        """What ``shmring bridge --status`` shows of this stream."""
        return {"channel": self.name, "pattern": self.channel.pattern,
                "received": self.received, "committed": self.committed,
                "duplicates": self.duplicates, "acks": self.acks, "eos": self.eos,
                "upstream_missed": self.upstream_missed,
                "error": self.error}
