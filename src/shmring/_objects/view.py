"""Records held in the ring while they are read: ``recv_obj(copy=False)``.

:class:`ObjectView` holds a record whose out-of-band buffers the received
object uses in place (read-only views of the ring), until it is released.
The helpers here hold the next record (:func:`_peek`) and decode one held
(:func:`_view_of`); the receive paths in ``recv.py`` and ``stream.py`` use
them. They take the C consumer core, never the Channel's Consumer.
"""

from __future__ import annotations

import contextlib
import time
from types import TracebackType
from typing import Any

from .. import _core
from .._errors import Timeout, WouldBlock
from .frame import _decode_view
from .serializers import Serializer


class ObjectView:
    """An object received with ``copy=False``: its out-of-band buffers
    (numpy arrays, ...) are read-only views of the record, which stays held
    in the ring until :meth:`release` or the end of the ``with`` block (fragment)::

        with rx.recv_obj(copy=False) as frame:
            total += frame["pixels"].sum()   # read in place, no copy

    Nothing received through it may be used after the block: the ring
    reuses those bytes. Keep a copy (``arr.copy()``) of anything you need
    longer, or receive with ``copy=True`` (the default). While the record is
    held, this consumer receives nothing else.
    """

    __slots__ = ("_consumer", "_done", "_views", "obj")

    def __init__(self, consumer: _core.ConsumerCore, obj: Any, views: list[memoryview],
                 held: bool = True) -> None:
        self._consumer = consumer
        self._views = views
        self._done = not held  # a streamed object holds no record
        #: The received object.
        self.obj = obj

    def __enter__(self) -> Any:
        return self.obj

    def release(self) -> None:
        """Give the record back to the ring (idempotent)."""
        if self._done:
            self.obj = None
            return
        self._done = True
        for v in self._views:
            # An array may still export it: then it must not be used any more.
            with contextlib.suppress(BufferError):
                v.release()
        self._views = []
        self.obj = None
        self._consumer._release()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _view_of(rx: _core.ConsumerCore, ser: Serializer, mv: memoryview) -> ObjectView:
    """An ObjectView of the held record ``mv``."""
    try:
        obj, views = _decode_view(ser, mv)
    except BaseException:
        rx._release()
        raise
    return ObjectView(rx, obj, views)


def _peek(rx: _core.ConsumerCore, timeout: float | None, nowait: bool) -> memoryview:
    """Hold the next record; WouldBlock instead of waiting when ``nowait``."""
    try:
        return rx._peek(0.0 if nowait else timeout)
    except Timeout:
        if nowait:
            err = WouldBlock(f"{rx._label} is empty")
            err.channel = rx._name
            raise err from None
        raise


def _left(timeout: float | None, start: float | None) -> float | None:
    """What is left of ``timeout`` (seconds) since the monotonic ``start``."""
    if timeout is None or start is None:
        return timeout
    return max(0.0, timeout - (time.monotonic() - start))
