"""Sending objects: the :class:`ObjectSender` half of ``shmring.Producer``.

``send_obj`` is a C method of the producer core (``csrc/py/objects.c``): the
common call - the default serializer and a plain value - is encoded into the
ring in that one call, with no Python frame in front of it. Every other call
it hands to :func:`_send_obj` or :func:`_send_encoded` here (wired in by
``_objects/__init__.py``), which serialize and send the record bare, framed
(:func:`write`, one claimed record) or streamed (``stream.py``).

This module knows the endpoint only through the C core: the channel's
``max_message``, pattern and lossiness are properties of the core, so
nothing here reaches back up to the Channel.
"""

from __future__ import annotations

from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any

from .. import _core
from .._errors import Timeout, WouldBlock
from .frame import FramePlan, encode
from .serializers import _WRAPPABLE, PICKLE, PickleSerializer, Serializer, _dumps
from .stream import _streams, _write_stream

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class ObjectSender(_core.ProducerCore):
    """Python objects into a channel: ``send_obj`` (the core's C method,
    typed in ``_core.pyi``) and :meth:`send_obj_nowait`."""

    #: How :meth:`send_obj` encodes objects (assign per endpoint to change).
    serializer: Serializer = PICKLE

    def send_obj_nowait(self, obj: Any, *, serializer: Serializer | None = None) -> None:
        """Send one object, or raise :class:`~shmring.WouldBlock` if the channel
        has no room for it now. Example::

            try:
                tx.send_obj_nowait(reading)
            except shmring.WouldBlock:
                dropped += 1
        """
        ser = self.serializer if serializer is None else serializer
        if ser.__class__ is PickleSerializer and self._send_value(obj, None, True):
            return
        data, buffers = encode(obj, ser)
        write(self, data, buffers, None, True)


def write(tx: _core.ProducerCore, data: ReadableBuffer, buffers: list[PickleBuffer],
          timeout: float | None, nowait: bool) -> None:
    """Send what :func:`encode` made: bare, or framed in one claimed record."""
    if not buffers:
        if nowait:
            tx.send_nowait(data)
        else:
            tx.send(data, timeout)
        return
    plan = FramePlan(data, buffers)
    try:
        if plan.size > tx._max_message and not nowait and _streams(tx):
            _write_stream(tx, plan.payload, plan.raws, timeout)
            return
        try:
            view = tx._claim(plan.size, 0.0 if nowait else timeout)
        except Timeout:
            if nowait:
                err = WouldBlock(f"{tx._label} is full")
                err.channel = tx._name
                raise err from None
            raise
        try:
            plan.write(view)
        except BaseException:
            tx._abort()
            raise
        tx._commit()
    finally:
        plan.release()


# ------------------------------------- the Python paths of the C send_obj --
def _send_obj(self: ObjectSender, obj: Any, timeout: float | None = None, *,
              serializer: Serializer | None = None) -> None:
    """``Producer.send_obj`` for the calls its C method hands over (another
    serializer, or an object that is not a plain value); the method is
    documented in ``_core.pyi``."""
    ser = self.serializer if serializer is None else serializer
    if ser.__class__ is PickleSerializer and self._send_value(obj, timeout):
        return  # a plain value, encoded into the ring by one C call
    _send_encoded(self, obj, timeout, ser)


def _send_encoded(self: _core.ProducerCore, obj: Any, timeout: float | None,
                  ser: Serializer) -> None:
    """send_obj for what is not a plain value (or a serializer other than
    pickle's): serialize, then send bare or framed."""
    if ser.__class__ is PickleSerializer and type(obj) not in _WRAPPABLE:
        # encode()'s common case, inlined.
        buffers: list[PickleBuffer] = []
        pickled = _dumps(obj, 5, buffer_callback=buffers.append)
        if not buffers:
            self.send(pickled, timeout)
            return
        data: ReadableBuffer = ser._inband_if_small(obj, pickled, buffers)
    else:
        data, buffers = encode(obj, ser, values=False)  # the value path declined it
    if buffers:
        write(self, data, buffers, timeout, False)
    else:
        self.send(data, timeout)
