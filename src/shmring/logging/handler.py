"""The :class:`Handler` of :mod:`shmring.logging`: ``emit`` puts one record
in the channel, or drops and counts it, never waiting longer than its
``timeout`` (the package docstring says why it is built so)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref

from .._channel.channel import Channel
from .._channel.endpoints import Producer
from .._errors import (
    InvalidArgument,
    MessageTooLarge,
    RegionNotFound,
    ShmringError,
    Timeout,
    WouldBlock,
)
from .._region.slots import AttachTable
from .record import DEFAULT_CHANNEL, _note, encode_record

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


