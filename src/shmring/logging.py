"""Logging through a channel: :class:`Handler` in any number of processes,
:class:`Sink` in one daemon that writes their records.

Why it is built this way:

- **The ring is the buffer, and it outlives the application.** ``emit``
  copies one encoded record into an mpsc channel that the sink created
  ``persistent=True``. Once ``emit`` returns the record is in shared memory:
  a SIGKILL of the application right after cannot lose it, and neither can
  one of the sink (a restarted sink re-opens the same region and writes what
  it had not read). The supervisor never unlinks a persistent region, so
  nobody has to keep it open for the records to survive.
- **emit never waits longer than ``timeout``.** It first reads one word, the
  ring's consumer owner: no sink there (it exited, or the supervisor freed the
  role of a killed one), and the record is dropped and counted at once. A
  live but slow sink (ring full) costs at most ``timeout``, after which emits
  for the next ``retry`` seconds only try without waiting. A missing channel is
  looked for again at most every ``retry`` seconds (one ``stat`` then, no
  system call in between).
- **Drops are counted exactly and reported in band.** ``handler.dropped``
  counts every record ``emit`` did not put in the ring; the next record that
  does get in carries the count not yet reported, and the sink logs
  ``"N records dropped by pid P"`` before it. A handler closed with drops
  still unreported sends a note with the count alone.
- **No pickle.** A record travels as a plain tuple (the formatted message,
  level, logger name, times, pid, process and thread names, source location,
  ``exc_text``, ``stack_info``) through the value codec, and the sink decodes
  it with the value decoder only, which never runs code: arbitrary ``args``
  are never sent, ``getMessage()`` is.
- **At least once at the sink.** The sink reads each record in place, hands it
  to its handlers (which write and flush it) and only then releases it. A
  sink killed between the two writes that one record again after its restart.

Rejected: pickling records as ``QueueHandler`` does (the sink would run
code the sender chose); checking for a live consumer in the attach table on
every emit (``Channel.consumers`` walks every slot and reads ``/proc``: tens
of microseconds); a region per application (the sink would have to find
them). Open: records left in the ring when the sink dies wait for the next
sink; if none ever starts on that channel they are neither written nor
counted as dropped.

The sink's counters (records written, drops reported) live in a small
region of their own, ``<channel>.sink``, which lives as long as the sink:
:func:`sink_status` reads them from shared memory.

Example (the sink usually runs as ``examples/logsink/logsinkd.py``)::

    import logging
    import shmring.logging

    sink = shmring.logging.Sink("app-logs", handlers=[logging.StreamHandler()])
    log = logging.getLogger("app")
    log.addHandler(shmring.logging.Handler("app-logs"))
    log.warning("disk %d%% full", 91)
    sink.drain(timeout=1)         # prints: disk 91% full
    sink.close(); sink.unlink()
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Iterable
from typing import Any

from . import _core
from . import _layout as L
from ._channel.channel import Channel
from ._channel.endpoints import Consumer, Producer
from ._errors import (
    DecodeError,
    EndOfStream,
    InvalidArgument,
    MessageTooLarge,
    RegionExists,
    RegionNotFound,
    ShmringError,
    Timeout,
    WouldBlock,
)
from ._region.slots import AttachTable

__all__ = ["DEFAULT_CHANNEL", "Handler", "Sink", "decode_record", "encode_record", "sink_status"]

#: The channel name :class:`Handler` and :class:`Sink` use by default.
DEFAULT_CHANNEL = "logsink"

# ------------------------------------------------------------------ wire --
# One record is the value-codec encoding of this tuple (no pickle):
#   (WIRE_VERSION, kind, created, levelno, levelname, name, msg, pid,
#    processName, threadName, pathname, lineno, funcName, exc_text,
#    stack_info, dropped)
# kind RECORD is a log record; kind NOTE carries only ``dropped`` (a handler
# closing with drops it could not report in a record).
WIRE_VERSION = 1
RECORD, NOTE = 0, 1
_FIELDS = 16
_STR_FIELDS = (4, 5, 6, 8, 9, 10, 12)
_OPT_STR_FIELDS = (13, 14)
_TRUNCATED = " [... truncated]"

#: The logger name of the lines the sink writes about drops.
SINK_LOGGER = "shmring.logsink"


def _text(s: object) -> object:
    # The value codec refuses lone surrogates; a log line keeps them escaped.
    if isinstance(s, str):
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def encode_record(record: logging.LogRecord, *, dropped: int = 0,
                  limit: int | None = None) -> bytes:
    """Encode ``record`` for the wire: its formatted message (``getMessage()``),
    never its ``args``. ``record.exc_text`` must already be set if the record
    has an exception (:class:`Handler` formats it). ``limit`` (bytes) cuts the
    message and the traceback so that the encoding fits."""
    exc, stack = record.exc_text, record.stack_info
    fields: tuple[Any, ...] = (WIRE_VERSION, RECORD, float(record.created), int(record.levelno),
              str(record.levelname), str(record.name), record.getMessage(),
              int(record.process or 0), str(record.processName), str(record.threadName),
              str(record.pathname), int(record.lineno), str(record.funcName),
              None if exc is None else str(exc), None if stack is None else str(stack),
              int(dropped))
    data = _core.encode_value(fields)
    if data is None:
        fields = tuple(_text(f) for f in fields)
        data = _encode(fields)
    if limit is not None and len(data) > limit:
        # Each of the three long texts gets an equal share (UTF-8: <= 4 bytes a char).
        keep = max(0, (limit - 512) // 12)
        cut = list(fields)
        for i in (6, 13, 14):
            f = cut[i]
            if isinstance(f, str) and len(f) > keep:
                cut[i] = f[:keep] + _TRUNCATED
        data = _encode(tuple(cut))
    return data


def _encode(fields: tuple[Any, ...]) -> bytes:
    data = _core.encode_value(fields)
    if data is None:  # cannot happen for the types above; never fall back to pickle
        raise InvalidArgument("log record fields are not plain values")
    return data


def _note(dropped: int) -> bytes:
    return _encode((WIRE_VERSION, NOTE, time.time(), logging.WARNING, "WARNING", SINK_LOGGER,
                    "", os.getpid(), "", "", "", 0, "", None, None, dropped))


def decode_record(data: Any) -> tuple[logging.LogRecord | None, int, int]:
    """Decode one wire record: ``(record or None for a note, dropped, pid)``.
    Uses the value decoder only (no pickle); anything else raises
    :class:`~shmring.DecodeError`."""
    t = _core.decode_value(data)
    if (not isinstance(t, tuple) or len(t) != _FIELDS or t[0] != WIRE_VERSION
            or t[1] not in (RECORD, NOTE)):
        raise DecodeError("not a shmring.logging record")
    if (not all(isinstance(t[i], str) for i in _STR_FIELDS)
            or not all(t[i] is None or isinstance(t[i], str) for i in _OPT_STR_FIELDS)
            or not isinstance(t[2], float)
            or not all(isinstance(t[i], int) for i in (3, 7, 11, 15)) or t[15] < 0):
        raise DecodeError("a shmring.logging record with fields of the wrong type")
    pid, dropped = t[7], t[15]
    if t[1] == NOTE:
        return None, dropped, pid
    created = t[2]
    rec = logging.makeLogRecord({
        "created": created, "msecs": (created - int(created)) * 1000.0,
        "levelno": t[3], "levelname": t[4], "name": t[5], "msg": t[6], "args": None,
        "process": pid, "processName": t[8], "threadName": t[9], "pathname": t[10],
        "filename": os.path.basename(t[10]), "module": os.path.splitext(os.path.basename(t[10]))[0],
        "lineno": t[11], "funcName": t[12], "exc_info": None, "exc_text": t[13],
        "stack_info": t[14],
    })
    return rec, dropped, pid


# --------------------------------------------------------------- handler --
_handlers: weakref.WeakSet[Handler] = weakref.WeakSet()


def _after_fork() -> None:
    for h in list(_handlers):
        h._forget()


os.register_at_fork(after_in_child=_after_fork)


class Handler(logging.Handler):
    """A :class:`logging.Handler` that sends records to a :class:`Sink`
    through channel ``channel`` (mpsc; the sink creates it).

    ``emit`` never waits longer than ``timeout`` seconds: when no sink is
    there, or the ring stays full, the record is dropped and counted in
    :attr:`dropped`; the next record that gets through carries the count, and
    the sink logs it. The channel is looked for again at most every ``retry``
    seconds. A record ``emit`` did not drop is in shared memory when it
    returns (:attr:`sent` counts them). Safe across ``fork``: a child sends
    through endpoints of its own. Example (fragment)::

        logging.getLogger().addHandler(shmring.logging.Handler())
    """

    def __init__(self, channel: str = DEFAULT_CHANNEL, *, namespace: str | None = None,
                 timeout: float = 0.05, level: int | str = logging.NOTSET,
                 retry: float = 0.5) -> None:
        if not timeout >= 0 or not retry >= 0:
            raise InvalidArgument(f"timeout and retry must be seconds >= 0, not "
                                  f"{timeout!r} and {retry!r}")
        super().__init__(level)
        self.channel = channel
        self.namespace = namespace
        self.timeout = float(timeout)
        self.retry = float(retry)
        #: Records ``emit`` dropped (no sink, or the ring full for ``timeout``).
        self.dropped = 0
        #: Records ``emit`` put in the ring.
        self.sent = 0
        self._unreported = 0
        self._ch: Channel | None = None
        self._tx: Producer | None = None
        self._table: AttachTable | None = None  # the channel's: is a sink there?
        self._inode = 0
        self._retry_at = 0.0
        self._nowait_until = 0.0
        self._formatter = logging.Formatter()
        _handlers.add(self)
        self.acquire()
        try:
            self._connect(time.monotonic())
        finally:
            self.release()

    # -------------------------------------------------------- connection --
    def _forget(self) -> None:
        # In a forked child: the endpoints are the parent's (never close them
        # here), and so are the counts: the child's start from zero.
        self._ch = self._tx = self._table = None
        self._retry_at = self._nowait_until = 0.0
        self.dropped = self.sent = self._unreported = 0

    def _disconnect(self) -> None:
        ch, self._ch, self._tx, self._table = self._ch, None, None, None
        if ch is not None:
            with contextlib.suppress(ShmringError):  # a broken one: the supervisor cleans up
                ch.close()

    def _connect(self, now: float) -> None:
        """Find the channel (at most every ``retry`` seconds)."""
        self._retry_at = now + self.retry
        if self._ch is not None:
            try:
                same = os.stat("/dev/shm" + self._ch.region.segment).st_ino == self._inode
            except OSError:
                same = False
            if same:
                return  # the same region, still no sink on it: keep it
            self._disconnect()  # removed (and maybe made again): open the new one
        try:
            ch = Channel.open(self.channel, namespace=self.namespace)
        except (RegionNotFound, ShmringError, OSError):
            return
        try:
            tx = ch.producer()
            self._inode = os.stat("/dev/shm" + ch.region.segment).st_ino
        except (ShmringError, OSError):  # e.g. AttachTableFull: drop and count
            ch.close()
            return
        except BaseException:
            ch.close()
            raise
        self._ch, self._tx, self._table = ch, tx, ch.region.table

    # -------------------------------------------------------------- emit --
    def _drop(self) -> None:
        self.dropped += 1
        self._unreported += 1

    def _sink_there(self) -> bool:
        """A sink holds the channel's consumer role (one load)."""
        return self._table is not None and self._table.owned(producer=False)

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record`` to the sink, or drop and count it (never waits
        longer than ``timeout``)."""
        try:
            tx = self._tx
            if tx is None or not self._sink_there():
                now = time.monotonic()
                if now < self._retry_at:
                    self._drop()
                    return
                self._connect(now)
                tx = self._tx
                if tx is None or not self._sink_there():
                    self._drop()
                    return
            if record.exc_info and record.exc_text is None:
                record.exc_text = (self.formatter or self._formatter).formatException(
                    record.exc_info)
            data = encode_record(record, dropped=self._unreported,
                                 limit=tx._max_message)
            nowait = bool(self._nowait_until) and time.monotonic() < self._nowait_until
            try:
                if nowait:
                    tx.send_nowait(data)
                else:
                    tx.send(data, self.timeout)
            except (Timeout, WouldBlock):
                if not nowait:
                    # The ring stayed full: for a while, try without waiting.
                    self._nowait_until = time.monotonic() + self.retry
                self._drop()
                return
            except MessageTooLarge:
                self._drop()
                return
            except ShmringError:
                # The channel broke under us (e.g. Broken: its segment was
                # truncated): let it go and look for a channel again later.
                self._disconnect()
                self._drop()
                return
            self.sent += 1
            self._unreported = 0
            self._nowait_until = 0.0
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Report drops not yet reported (a note, if the sink is there), then
        close the channel."""
        self.acquire()
        try:
            tx = self._tx
            if (tx is not None and self._unreported
                    and self._sink_there()):
                try:
                    tx.send(_note(self._unreported), self.timeout)
                    self._unreported = 0
                except (Timeout, WouldBlock):
                    pass
            self._disconnect()
        finally:
            self.release()
        _handlers.discard(self)
        super().close()

    def __repr__(self) -> str:
        return (f"<shmring.logging.Handler {self.channel!r} "
                f"({logging.getLevelName(self.level)}) sent={self.sent} dropped={self.dropped}>")


# ------------------------------------------------------------------ sink --
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
