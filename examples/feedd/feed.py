"""A feed: the latest value of every key, and every update after it.

A publisher keeps two things for feed ``NAME``, both in shared memory:

- the **stream**: every update ``(seq, key, value)`` on two broadcast
  channels, ``NAME`` (lossless: the publisher waits for its slowest
  subscriber) and ``NAME.lossy`` (lossy: the publisher never waits, and a
  subscriber that falls behind skips to the newest update). ``seq`` is one
  global sequence number, 1, 2, 3, ... over the feed's life;
- the **snapshot**: the ring bytes of a third channel, ``NAME.snap``, used as
  plain words (no record is ever sent through it, as a queue's ``.ctl``): a
  header and one slot per key holding the key's latest value and its seq.

Why a late subscriber sees no gap and no duplicate. The publisher does, per
update ``n``: write slot ``n`` of the snapshot, store ``last_seq = n``, send
``n`` on both channels, store ``sent_seq = n``. A subscriber (1) joins its
channel, then (2) reads every slot, and calls ``S`` the highest seq it
found. Any update newer than ``S`` was written after the subscriber read
its slot, so it was sent after the join: it is in the stream. An update of
seq ``<= S`` that the subscriber's slot read missed (written after that slot
was read) was also sent after the join; so (3) the subscriber waits until
``sent_seq >= S`` (they are then all in its ring) and drains its ring
without waiting, folding each update of seq ``<= S`` that is newer than its
key's slot into the snapshot. What it holds is then exactly the state after
updates ``1..S``, and the next update it receives is ``S + 1``.

Why each slot reads consistently: a slot holds two copies of (seq, value)
and a version word ``ver`` (completed writes; the current copy is
``ver & 1``). The single writer writes the other copy, then stores
``ver + 1``; a reader loads ``ver``, reads the current copy, loads ``ver``
again and retries unless it is unchanged (a seqlock). Every word is moved
with ``_core``'s atomics (seq-cst stores, acquire loads), so the reader's
second load of ``ver`` is ordered after the copy it read, on any CPU. A
writer killed mid-write leaves the current copy intact.

Restart. A publisher that starts under a name whose snapshot still exists
(a subscriber held it while the old one was killed) resumes: ``seq`` goes on
from the highest seq in the slots. If that update was written but not sent
(``sent_seq`` is behind) it sends it again first; a subscriber drops any
update whose seq it has already applied, so a kill between a send and the
``sent_seq`` store costs a duplicate on the wire, never a gap or a
duplicate in what subscribers apply. With nobody attached when the
publisher dies, the supervisor removes all three regions, and the next
publisher starts a new feed at seq 1.

What a lossy subscriber is told: each :class:`Update` carries ``gap``, the
updates skipped right before it (from seq numbers); :attr:`Subscriber.missed`
adds them up and equals the channel's own count, ``Consumer.missed``
(messages skipped), except that a duplicate re-sent by a restarted publisher
and skipped in an overrun counts in the second only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import shmring
from shmring import _core
from shmring import _layout as L

# --------------------------------------------------------- the snapshot --
# Byte layout of the snapshot (offsets from the start of the ring bytes of
# NAME.snap), in 8-byte words:
#
#   0     MAGIC      "FEEDSNAP", stored last by the creator (publication)
#   8     VERSION    layout version of this table
#   16    CAPACITY   slots in the table
#   24    NKEYS      slots in use (stored after a new slot's key)
#   32    LAST_SEQ   highest seq written to a slot
#   40    SENT_SEQ   highest seq sent on both channels
#   48    GENERATION publishers started on this snapshot, the first one is 1
#   56    PUB_PID    pid of the latest publisher
#   ...   (up to 256: the header)
#   256   slot 0, then slot 1, ... each SLOT bytes:
#
#   +0    VER   completed writes; 0 = no value yet; current copy = VER & 1
#   +8    KLEN  key length (the key is written once, before NKEYS covers it)
#   +16   KEY   KEY_MAX bytes
#   +48   copy 0: SEQ (8), VLEN (8), VALUE (VALUE_MAX bytes)
#   +152  copy 1: the same
#   +256  (next slot)
MAGIC_VALUE = int.from_bytes(b"FEEDSNAP", "little")
VERSION_VALUE = 1
MAGIC, VERSION, CAPACITY, NKEYS, LAST_SEQ, SENT_SEQ, GENERATION, PUB_PID = range(0, 64, 8)
HEADER = 256
SLOT = 256
VER, KLEN, KEY = 0, 8, 16
KEY_MAX = 32
COPY0, COPY_SIZE = 48, 104
C_SEQ, C_VLEN, C_VALUE = 0, 8, 16
VALUE_MAX = COPY_SIZE - C_VALUE  # 88 bytes of encoded value
READ_TRIES = 10_000


def _put(buf: Any, off: int, data: bytes) -> None:
    """Store ``data`` as whole little-endian words (padded with zeros)."""
    data += bytes(-len(data) % 8)
    for i in range(0, len(data), 8):
        _core.store(buf, off + i, int.from_bytes(data[i:i + 8], "little"))


def _get(buf: Any, off: int, n: int) -> bytes:
    """Load ``n`` bytes stored by :func:`_put`."""
    words = [_core.load(buf, off + i).to_bytes(8, "little") for i in range(0, n, 8)]
    return b"".join(words)[:n]


def channel_names(name: str) -> tuple[str, str, str]:
    """The lossless, lossy and snapshot channel names of feed ``name``."""
    return name, f"{name}.lossy", f"{name}.snap"


class Snapshot:
    """The snapshot table of a feed: key -> (seq, latest value).

    The publisher makes it with :meth:`create_or_open`; subscribers
    :meth:`open` it. Only the publisher writes (one writer at a time: the
    broadcast producer role makes sure of it); any number of processes read.
    """

    def __init__(self, channel: shmring.Channel) -> None:
        self.channel = channel
        buf = channel.region.buf
        if buf is None:
            raise shmring.Closed(f"{channel.name!r} is closed")
        self._buf = buf
        self._base = int(_core.load(self._buf, L.HDR_DATA_OFFSET))

    # ----------------------------------------------------- lifecycle --
    @classmethod
    def create_or_open(cls, name: str, capacity: int, *,
                       namespace: str | None = None) -> Snapshot:
        """The snapshot of feed ``name``, made for ``capacity`` keys if it
        does not exist yet (then every header word is stored before the
        magic, which publishes it)."""
        snap_name = channel_names(name)[2]
        size = 1 << max(10, (HEADER + SLOT * capacity - 1).bit_length())
        while True:
            try:
                ch = shmring.Channel.create(snap_name, capacity=size, pattern="spsc",
                                            namespace=namespace)
            except shmring.RegionExists:
                try:
                    return cls.open(name, namespace=namespace)
                except shmring.RegionNotFound:
                    continue  # removed meanwhile: make it
            snap = cls(ch)
            snap._store(CAPACITY, capacity)
            snap._store(VERSION, VERSION_VALUE)
            # Publication: pairs with the acquire load of MAGIC in open().
            snap._store(MAGIC, MAGIC_VALUE)
            return snap

    @classmethod
    def open(cls, name: str, *, namespace: str | None = None, wait: float = 0.0) -> Snapshot:
        """Open the snapshot of feed ``name``, waiting up to ``wait``
        seconds for it to exist. Raises :class:`shmring.RegionNotFound`, or
        :class:`shmring.CorruptRegion` for a region that is not a feed's."""
        ch = shmring.Channel.open(channel_names(name)[2], wait=wait, namespace=namespace)
        try:
            snap = cls(ch)
            deadline = time.monotonic() + 2.0
            while snap._load(MAGIC) != MAGIC_VALUE:  # its creator is still laying it out
                if time.monotonic() > deadline:
                    raise shmring.CorruptRegion(
                        f"{ch.name!r} is not a feed snapshot (or its publisher died making "
                        "it): remove it with `shmring gc`")
                time.sleep(0.001)
            if snap._load(VERSION) != VERSION_VALUE:
                raise shmring.CorruptRegion(f"{ch.name!r} has an unknown snapshot layout")
            if HEADER + SLOT * snap.capacity > ch.capacity:
                raise shmring.CorruptRegion(f"{ch.name!r} is too small for its capacity")
        except BaseException:
            ch.close()
            raise
        return snap

    def close(self) -> None:
        """Unmap the snapshot (the supervisor removes it after its last user)."""
        self.channel.close()

    # -------------------------------------------------------- header --
    def _load(self, word: int) -> int:
        return int(_core.load(self._buf, self._base + word))

    def _store(self, word: int, value: int) -> None:
        _core.store(self._buf, self._base + word, value)

    @property
    def capacity(self) -> int:
        """How many keys the table holds."""
        return self._load(CAPACITY)

    @property
    def nkeys(self) -> int:
        """Keys in the table."""
        return min(self._load(NKEYS), self.capacity)

    @property
    def last_seq(self) -> int:
        """The highest seq written to the table."""
        return self._load(LAST_SEQ)

    @property
    def sent_seq(self) -> int:
        """The highest seq the publisher has sent on both channels."""
        return self._load(SENT_SEQ)

    @property
    def generation(self) -> int:
        """How many publishers have started on this snapshot."""
        return self._load(GENERATION)

    @property
    def publisher_pid(self) -> int:
        """The pid of the latest publisher (it may be dead)."""
        return self._load(PUB_PID)

    # --------------------------------------------------------- slots --
    def _slot(self, index: int) -> int:
        return self._base + HEADER + SLOT * index

    def key(self, index: int) -> str:
        """The key of slot ``index``."""
        off = self._slot(index)
        n = min(int(_core.load(self._buf, off + KLEN)), KEY_MAX)
        return _get(self._buf, off + KEY, n).decode()

    def read_slot(self, index: int) -> tuple[int, Any] | None:
        """(seq, value) of slot ``index``, read consistently; None if it has
        no value yet."""
        buf, off = self._buf, self._slot(index)
        for _ in range(READ_TRIES):
            v1 = int(_core.load(buf, off + VER))
            if v1 == 0:
                return None
            copy = off + COPY0 + COPY_SIZE * (v1 & 1)
            seq = int(_core.load(buf, copy + C_SEQ))
            n = int(_core.load(buf, copy + C_VLEN))
            data = _get(buf, copy + C_VALUE, min(n, VALUE_MAX))
            # Pairs with the writer's store of VER in write_slot: unchanged,
            # no write started on this copy while we read it.
            if int(_core.load(buf, off + VER)) == v1 and n <= VALUE_MAX:
                return seq, _core.decode_value(data)
        raise shmring.CorruptRegion(f"slot {index} of {self.channel.name!r} never read "
                                    "consistently")

    def read(self) -> dict[str, tuple[int, Any]]:
        """Every key's (seq, latest value), each slot read consistently (not
        one cut across keys: see the module docstring for how a subscriber
        makes one)."""
        out: dict[str, tuple[int, Any]] = {}
        for i in range(self.nkeys):
            got = self.read_slot(i)
            if got is not None:
                out[self.key(i)] = got
        return out

    def add_key(self, key: str) -> int:
        """Give ``key`` the next slot (publisher only); its index."""
        raw = key.encode()
        if not 0 < len(raw) <= KEY_MAX:
            raise shmring.InvalidArgument(f"key {key!r} must be 1 to {KEY_MAX} UTF-8 bytes")
        index = self._load(NKEYS)
        if index >= self.capacity:
            raise shmring.InvalidArgument(
                f"feed {self.channel.name!r} holds {self.capacity} keys: all are taken")
        off = self._slot(index)
        _core.store(self._buf, off + VER, 0)
        _core.store(self._buf, off + KLEN, len(raw))
        _put(self._buf, off + KEY, raw)
        # Publication of the slot's key: pairs with the load of NKEYS in read().
        self._store(NKEYS, index + 1)
        return index

    def write_slot(self, index: int, seq: int, value: Any) -> None:
        """Store ``value`` (a plain value, encoded to at most
        ``VALUE_MAX`` bytes) as the latest of slot ``index`` (publisher only)."""
        data = _core.encode_value(value)
        if data is None or len(data) > VALUE_MAX:
            raise shmring.InvalidArgument(
                f"value {value!r} must be a plain value of at most {VALUE_MAX} bytes encoded")
        buf, off = self._buf, self._slot(index)
        ver = int(_core.load(buf, off + VER))
        copy = off + COPY0 + COPY_SIZE * ((ver + 1) & 1)  # the copy readers are not on
        _core.store(buf, copy + C_SEQ, seq)
        _core.store(buf, copy + C_VLEN, len(data))
        _put(buf, copy + C_VALUE, data)
        # Publication of the copy: pairs with both loads of VER in read_slot.
        _core.store(buf, off + VER, ver + 1)


# ------------------------------------------------------------ publisher --
class Publisher:
    """The one publisher of feed ``name`` (a second one raises
    :class:`shmring.RoleTaken`): it makes or reopens the three regions,
    resumes from the snapshot left by a publisher that was killed, and
    publishes updates with :meth:`publish`.

    ``capacity`` is the ring size of each channel; ``keys`` the most keys a
    new snapshot holds.
    """

    def __init__(self, name: str, *, keys: int = 1024, capacity: int = 1 << 20,
                 namespace: str | None = None) -> None:
        self.name = name
        #: Set it (from a signal handler) to make a publish that waits for a
        #: lossless subscriber give up.
        self.stopping = False
        self.snapshot = Snapshot.create_or_open(name, keys, namespace=namespace)
        self._channels: list[shmring.Channel] = []
        try:
            for ch_name, lossy in zip(channel_names(name)[:2], (False, True), strict=True):
                self._channels.append(_create_or_open(ch_name, capacity, lossy, namespace))
            self._tx = [ch.producer() for ch in self._channels]
            self._index: dict[str, int] = {}
            self.state: dict[str, Any] = {}
            self.resent = self._resume()
        except BaseException:
            self.close()
            raise

    def _resume(self) -> bool:
        """Take over from the previous publisher; True if its last update
        had to be sent again."""
        snap = self.snapshot
        last, last_key = 0, ""
        for i in range(snap.nkeys):
            key = snap.key(i)
            self._index[key] = i
            got = snap.read_slot(i)
            if got is not None:
                self.state[key] = got[1]
                if got[0] > last:
                    last, last_key = got[0], key
        self.seq = last
        snap._store(LAST_SEQ, last)
        resent = snap.sent_seq < last
        if resent:  # written, maybe not sent: send it (again)
            self._send((last, last_key, self.state[last_key]))
        snap._store(SENT_SEQ, last)
        snap._store(PUB_PID, os.getpid())
        _core.fetch_add(snap._buf, snap._base + GENERATION, 1)
        return resent

    def publish(self, key: str, value: Any) -> int:
        """Publish ``value`` as the latest of ``key``; returns its seq.
        Waits while a lossless subscriber is behind by a whole ring
        (until :attr:`stopping` is set; then raises
        :class:`shmring.Timeout` and the update is in the snapshot only,
        to be sent by the next publisher)."""
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = self.snapshot.add_key(key)
        seq = self.seq + 1
        snap = self.snapshot
        snap.write_slot(index, seq, value)
        snap._store(LAST_SEQ, seq)
        self.seq = seq
        self.state[key] = value
        self._send((seq, key, value))
        snap._store(SENT_SEQ, seq)
        return seq

    def _send(self, msg: tuple[int, str, Any]) -> None:
        for tx in self._tx:
            while True:
                try:
                    tx.send_obj(msg, timeout=0.2)
                    break
                except shmring.Timeout:
                    if self.stopping:
                        raise

    @property
    def channels(self) -> list[shmring.Channel]:
        """The lossless and the lossy channel."""
        return list(self._channels)

    def close(self) -> None:
        """Stop publishing; the regions stay while anyone uses them, so a
        publisher started under the same name goes on from here."""
        for ch in self._channels:
            ch.close()
        self.snapshot.close()


def _create_or_open(name: str, capacity: int, lossy: bool,
                    namespace: str | None) -> shmring.Channel:
    while True:
        try:
            return shmring.Channel.create(name, capacity=capacity, pattern="broadcast",
                                          lossy=lossy, namespace=namespace)
        except shmring.RegionExists:
            try:
                return shmring.Channel.open(name, namespace=namespace)
            except shmring.RegionNotFound:
                continue  # removed meanwhile: make it


# ----------------------------------------------------------- subscriber --
class Update(NamedTuple):
    """One update as a subscriber applies it. ``gap``: how many updates
    before it this subscriber did not get (0 on a lossless channel)."""

    seq: int
    key: str
    value: Any
    gap: int


class Subscriber:
    """A subscriber of feed ``name``: on creation, the state at seq
    :attr:`snapshot_seq` (:attr:`snapshot`), then every later update from
    :meth:`recv`, in order, each applied to :attr:`state`.

    ``lossy=True`` reads ``NAME.lossy``: the publisher never waits for it,
    and updates it was too slow for are counted (:attr:`missed`,
    :attr:`Update.gap`). ``wait``: seconds to wait for the feed to exist
    (:class:`shmring.RegionNotFound` after that); ``catch_up``: for the
    publisher to send what its snapshot shows (one being restarted);
    :class:`shmring.Timeout` after that.

    Example (fragment)::

        sub = Subscriber("ticks")
        print(sub.snapshot_seq, sub.snapshot)
        for u in sub:
            print(u.seq, u.key, u.value)
    """

    def __init__(self, name: str, *, lossy: bool = False, namespace: str | None = None,
                 wait: float = 10.0, catch_up: float = 30.0) -> None:
        self.name = name
        self.lossy = lossy
        self.table = Snapshot.open(name, namespace=namespace, wait=wait)
        try:
            self.channel = shmring.Channel.open(channel_names(name)[1 if lossy else 0],
                                                wait=wait, namespace=namespace)
        except BaseException:
            self.table.close()
            raise
        #: Updates skipped (gaps in seq) and updates received twice (dropped).
        self.missed = 0
        self.duplicates = 0
        #: Updates of seq <= snapshot_seq that the slot reads had not seen and
        #: the join took from the ring instead (step 3).
        self.folded = 0
        self._pending: tuple[int, str, Any] | None = None
        try:
            self._join(catch_up)
        except BaseException:
            self.close()
            raise
        self.state: dict[str, Any] = dict(self.snapshot)
        self.seq = self.snapshot_seq

    def _join(self, wait: float) -> None:
        """Steps (1)-(3) of the module docstring; again, with a new
        consumer, if the lossy ring overran while this one caught up."""
        for _attempt in range(20):
            self._rx = self.channel.consumer()          # (1) join the stream
            snap = self.table.read()                    # (2) read every slot
            top = max((s for s, _v in snap.values()), default=0)
            deadline = time.monotonic() + wait          # (3) all of 1..top sent
            while self.table.sent_seq < top:
                if time.monotonic() > deadline:
                    raise shmring.Timeout(
                        f"feed {self.name!r}: seq {top} is in the snapshot but was not sent "
                        f"within {wait:g} s (is the publisher running?)")
                time.sleep(0.0005)
            self._pending = None
            self.folded = 0
            while True:                                 # ... and drain what is in the ring
                try:
                    msg = self._rx.recv_obj_nowait()
                except shmring.WouldBlock:
                    break
                seq, key, value = msg
                if seq > top:
                    self._pending = (seq, key, value)
                    break
                if seq > snap.get(key, (0, None))[0]:
                    snap[key] = (seq, value)
                    self.folded += 1
            if self._rx.missed == 0:
                self.snapshot_seqs = {k: s for k, (s, _v) in snap.items()}
                self.snapshot = {k: v for k, (_s, v) in snap.items()}
                self.snapshot_seq = top
                return
            self._rx.close()  # overrun while catching up: take a new snapshot
        raise shmring.Timeout(f"feed {self.name!r} overran this subscriber 20 times while "
                              "it joined: use a larger lossy ring or the lossless channel")

    def recv(self, timeout: float | None = None) -> Update:
        """The next update, applied to :attr:`state`. Raises
        :class:`shmring.Timeout` if none comes within ``timeout`` seconds."""
        while True:
            if self._pending is not None:
                seq, key, value = self._pending
                self._pending = None
            else:
                seq, key, value = self._rx.recv_obj(timeout=timeout)
            if seq <= self.seq:
                self.duplicates += 1  # re-sent by a restarted publisher
                continue
            gap = seq - self.seq - 1
            self.missed += gap
            self.seq = seq
            self.state[key] = value
            return Update(seq, key, value, gap)

    def __iter__(self) -> Iterator[Update]:
        while True:
            yield self.recv()

    @property
    def channel_missed(self) -> int:
        """The channel's own count of messages this subscriber skipped
        (``Consumer.missed``): equals :attr:`missed` (module docstring)."""
        return self._rx.missed

    @property
    def publisher_alive(self) -> bool:
        """True while a live process holds the channel's producer role."""
        return self.channel.producers > 0

    def close(self) -> None:
        """Leave the feed."""
        self.channel.close()
        self.table.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
