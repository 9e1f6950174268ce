"""The :class:`Sink` of :mod:`shmring.logging`: it owns the channel, writes
every record through standard handlers before releasing it, and keeps its
counters in shared memory (:func:`sink_status`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from .. import _core
from .. import _layout as L
from .._channel.channel import Channel
from .._channel.endpoints import Consumer
from .._errors import (
    DecodeError,
    EndOfStream,
    InvalidArgument,
    RegionExists,
    RegionNotFound,
    Timeout,
    WouldBlock,
)
from .record import DEFAULT_CHANNEL, SINK_LOGGER, decode_record

# The words of ``<channel>.sink``, 8 bytes each from the start of its ring
# bytes (no endpoint ever uses that ring). MAGIC is stored last.
_W_MAGIC, _W_PID, _W_STARTED, _W_WRITTEN, _W_DROPS, _W_BAD = (8 * i for i in range(6))
_MAGIC = 0x4B4E49534C4F4753  # "SGOLSINK"


def _stats_name(channel: str) -> str:
    return f"{channel}.sink"


class _Words:
    """Counters in the ring bytes of a channel no endpoint uses."""

    def __init__(self, ch: Channel) -> None:
        self.ch = ch
        self.buf = ch.region._mapping()
        self.base = int(ch.region.counter(L.HDR_DATA_OFFSET))

    def get(self, w: int) -> int:
        return int(_core.load(self.buf, self.base + w))

    def set(self, w: int, v: int) -> None:
        _core.store(self.buf, self.base + w, v)

    def add(self, w: int, v: int) -> None:
        _core.fetch_add(self.buf, self.base + w, v)


class Sink:
    """The receiving end: takes the records of every :class:`Handler` on
    channel ``channel`` and hands them, as :class:`logging.LogRecord`, to
    ``handlers`` (standard ones: a ``RotatingFileHandler``, a
    ``StreamHandler``...), with a ``"N records dropped by pid P"`` warning
    (logger ``shmring.logsink``) before a record that carries drops.

    Creates the channel (mpsc, ``capacity`` bytes, persistent, 255 attach
    slots: up to 126 handler processes at once, two slots each; a process
    beyond that drops and counts its records), or re-opens the one a previous
    sink left, with its unread records. One sink per
    channel: a second raises :class:`~shmring.RoleTaken`. :meth:`close`
    leaves the channel (records sent meanwhile wait for the next sink);
    :meth:`unlink` removes it. Example: see the module docstring.
    """

    def __init__(self, channel: str = DEFAULT_CHANNEL, *, handlers: Iterable[logging.Handler],
                 namespace: str | None = None, capacity: int = 1 << 22) -> None:
        self.channel = channel
        self.namespace = namespace
        self.handlers = list(handlers)
        self._ch = self._open(capacity)
        try:
            if self._ch.pattern != "mpsc":
                raise InvalidArgument(f"channel {channel!r} is {self._ch.pattern}, not a log "
                                      "channel (mpsc)")
            self._rx: Consumer = self._ch.consumer()
            self._stats = _Words(self._open_stats())
        except BaseException:
            self._ch.close()
            raise
        s = self._stats
        for w in (_W_WRITTEN, _W_DROPS, _W_BAD):
            s.set(w, 0)
        s.set(_W_PID, os.getpid())
        s.set(_W_STARTED, time.time_ns())
        s.set(_W_MAGIC, _MAGIC)

    def _open(self, capacity: int) -> Channel:
        for _ in range(5):
            try:
                # Every slot: a handler's process takes two (its attach and its producer).
                return Channel.create(self.channel, capacity, "mpsc", persistent=True,
                                      slots=L.MAX_SLOTS, namespace=self.namespace)
            except RegionExists:
                pass
            try:
                return Channel.open(self.channel, namespace=self.namespace)
            except RegionNotFound:
                continue  # removed meanwhile: create it
        raise RegionNotFound(f"channel {self.channel!r} kept being removed while opening it")

    def _open_stats(self) -> Channel:
        name = _stats_name(self.channel)
        for _ in range(5):
            try:
                return Channel.create(name, L.MIN_CAPACITY, "spsc", namespace=self.namespace)
            except RegionExists:
                pass
            try:
                # Left by a dead sink (its supervisor is about to remove it, or
                # there is none); we hold the consumer role: no other sink uses it.
                return Channel.open(name, namespace=self.namespace)
            except RegionNotFound:
                continue
        raise RegionNotFound(f"channel {name!r} kept being removed while opening it")

    # ---------------------------------------------------------- counters --
    @property
    def written(self) -> int:
        """Records this sink handed to its handlers (drop lines aside)."""
        return self._stats.get(_W_WRITTEN)

    @property
    def drops_reported(self) -> int:
        """Drops the handlers reported to this sink."""
        return self._stats.get(_W_DROPS)

    @property
    def undecodable(self) -> int:
        """Records skipped because they were not log records."""
        return self._stats.get(_W_BAD)

    # -------------------------------------------------------------- work --
    def drain(self, timeout: float | None = 0.0, max_records: int | None = None) -> int:
        """Write the records waiting in the ring (at most ``max_records``),
        waiting up to ``timeout`` seconds for the first; returns how many
        records were taken. Returns 0 once the channel is closed for
        sending."""
        rx, n, wait = self._rx, 0, timeout
        while max_records is None or n < max_records:
            try:
                view = rx.recv_view(wait)
            except (Timeout, WouldBlock, EndOfStream):
                break
            with view as mv:  # released only after the handlers wrote it
                self._handle(mv)
            n += 1
            wait = 0.0
        return n

    def _handle(self, mv: memoryview) -> None:
        try:
            rec, dropped, pid = decode_record(mv)
        except DecodeError as e:
            self._stats.add(_W_BAD, 1)
            self._emit(self._line(logging.ERROR, "undecodable record of %d bytes skipped: %s",
                                  (mv.nbytes, e), time.time()))
            return
        if dropped:
            self._stats.add(_W_DROPS, dropped)
            self._emit(self._line(logging.WARNING, "%d records dropped by pid %d",
                                  (dropped, pid), time.time() if rec is None else rec.created))
        if rec is not None:
            self._emit(rec)
            self._stats.add(_W_WRITTEN, 1)

    @staticmethod
    def _line(level: int, msg: str, args: tuple[Any, ...], created: float) -> logging.LogRecord:
        rec = logging.LogRecord(SINK_LOGGER, level, __file__, 0, msg, args, None)
        rec.created, rec.msecs = created, (created - int(created)) * 1000.0
        return rec

    def _emit(self, rec: logging.LogRecord) -> None:
        for h in self.handlers:
            if rec.levelno >= h.level:
                h.handle(rec)

    # --------------------------------------------------------- lifecycle --
    def close(self) -> None:
        """Stop taking records and give the consumer role back; the channel
        stays (with anything sent after this) for the next sink."""
        if self._ch.closed:
            return
        self._ch.close()
        stats = self._stats.ch
        stats.close()
        stats.unlink()

    def unlink(self) -> None:
        """Remove the channel's name (records still in it are lost once the
        last process holding it lets go)."""
        self._ch.unlink()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shmring.logging.Sink {self.channel!r} written={self.written}>"


def sink_status(channel: str = DEFAULT_CHANNEL, *, namespace: str | None = None
                ) -> dict[str, Any]:
    """What the sink of ``channel`` is doing, read from shared memory:
    ``running``, ``pid``, ``started`` (Unix time), ``written``,
    ``drops_reported``, ``undecodable`` (None when no sink runs), and from
    the channel's own counters (None when there is no channel): ``pending``
    (records in the ring), ``fill`` and ``capacity`` (bytes), ``sent_total``
    (records ever put in it) and ``handlers`` (producer endpoints attached,
    live or not yet recovered)."""
    out: dict[str, Any] = {"channel": channel, "running": False, "pid": None, "started": None,
                           "written": None, "drops_reported": None, "undecodable": None,
                           "pending": None, "capacity": None, "fill": None, "sent_total": None,
                           "handlers": None}
    try:
        ch = Channel.open(channel, namespace=namespace)
    except RegionNotFound:
        return out
    try:
        r = ch.region
        # Totals: what closed endpoints folded into the header, plus the live slots'.
        inn, done = r.counter(L.OFF_STATS_IN_MSGS), r.counter(L.OFF_STATS_OUT_MSGS)
        handlers = 0
        for slot in r.slots():
            if slot.role == "producer":
                inn += slot.messages
                handlers += 1
            elif slot.role == "consumer":
                done += slot.messages
        out.update(pending=max(0, inn - done), capacity=ch.capacity, sent_total=inn,
                   handlers=handlers,
                   fill=r.counter(L.OFF_TAIL) - r.counter(L.OFF_HEAD))
        owner = r.table.owner_pid(producer=False) if ch.consumers else None
    finally:
        ch.close()
    try:
        st = Channel.open(_stats_name(channel), namespace=namespace)
    except RegionNotFound:
        return out
    try:
        w = _Words(st)
        pid = w.get(_W_PID)
        if w.get(_W_MAGIC) == _MAGIC and pid == owner:
            out.update(running=True, pid=pid, started=w.get(_W_STARTED) / 1e9,
                       written=w.get(_W_WRITTEN), drops_reported=w.get(_W_DROPS),
                       undecodable=w.get(_W_BAD))
    finally:
        st.close()
    return out
