"""Receiving objects: the :class:`ObjectReceiver` half of ``shmring.Consumer``.

``recv_obj`` is a C method of the consumer core (``csrc/py/objects.c``): the
common call - the default serializer, a value record, ``copy=True`` - is
decoded from the ring in that one call, with no Python frame in front of
it. Every other call it hands to :func:`_recv_obj` or :func:`_recv_other`
here (wired in by ``_objects/__init__.py``).

Receiving copies by default. A small record comes out as ``bytes`` from one
C call (``recv``), which is also what pickle reads fastest. A framed record
received that way would cost a second copy of each writable buffer, so after
a large framed record a consumer reads records in place (``_peek``) and
copies each buffer once, until a small record comes again (the consumer's
``_obj_in_place``). ``copy=False`` returns an :class:`~shmring.ObjectView`
whose arrays are read-only views of the ring, valid until the view is
released (``view.py``). Records of a streamed object go to ``stream.py``.
"""

from __future__ import annotations

import time
from typing import Any, Literal, overload

from .. import _core
from .frame import (
    _FLAG_READONLY,
    LARGE_RECORD,
    VALUE_TAG,
    _decode_copy,
    _decode_error,
    _decode_value,
    _frame,
)
from .serializers import PICKLE, PickleSerializer, Serializer, _loads
from .stream import _is_stream, _Stream, _stream_take
from .view import ObjectView, _left, _peek, _view_of


class ObjectReceiver(_core.ConsumerCore):
    """Python objects out of a channel: ``recv_obj`` (the core's C method,
    typed in ``_core.pyi``) and :meth:`recv_obj_nowait`."""

    #: How :meth:`recv_obj` decodes objects (assign per endpoint to change).
    serializer: Serializer = PICKLE
    _obj_in_place = False  # read records in place (see the module docstring)
    _stream: _Stream | None  # a streamed object being received (the core's slot)

    @overload
    def recv_obj_nowait(self, *, copy: Literal[True] = ...,
                        serializer: Serializer | None = ...) -> Any: ...
    @overload
    def recv_obj_nowait(self, *, copy: Literal[False],
                        serializer: Serializer | None = ...) -> ObjectView: ...
    @overload
    def recv_obj_nowait(self, *, copy: bool,
                        serializer: Serializer | None = ...) -> Any: ...
    def recv_obj_nowait(self, *, copy: bool = True,
                        serializer: Serializer | None = None) -> Any:
        """Receive one object, or raise :class:`~shmring.WouldBlock` if none is
        waiting. See :meth:`recv_obj`. Example::

            while True:
                try:
                    handle(rx.recv_obj_nowait())
                except shmring.WouldBlock:
                    break
        """
        ser = self.serializer if serializer is None else serializer
        if copy:
            return _take_copy(self, ser, None, True)
        return _take_view(self, ser, None, True)


def _decode_owned(rx: ObjectReceiver, ser: Serializer, data: bytes) -> Any:
    """Decode a record received as ``bytes`` (the whole record, copied)."""
    if data[:1] == b"\x01" and ser.__class__ is PickleSerializer:
        return _decode_value(data)
    if not (ser.out_of_band and data[:1] == b"\x00"):
        try:
            return ser.loads(data, ())
        except Exception as e:
            raise _decode_error(ser, e) from e
    if len(data) > LARGE_RECORD:
        # Framed records are large: read the next ones in place, so each
        # buffer is copied once rather than twice (see _take_in_place).
        rx._obj_in_place = True
    mv = memoryview(data)
    payload, table = _frame(mv)
    # Read-only buffers can stay in the received bytes; writable ones (a
    # numpy array is writable) get memory of their own.
    bufs: list[memoryview | bytearray] = [
        mv[o:o + n] if f & _FLAG_READONLY else bytearray(mv[o:o + n]) for o, n, f in table
    ]
    try:
        return ser.loads(payload, bufs)
    except Exception as e:
        raise _decode_error(ser, e) from e


def _take_in_place(rx: ObjectReceiver, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """Receive by reading the record in place and copying each buffer once."""
    start = None if timeout is None else time.monotonic()
    mv = _peek(rx, timeout, nowait)
    if ser.out_of_band and _is_stream(mv):
        return _stream_take(rx, ser, _left(timeout, start), nowait, True, mv=mv)
    try:
        small = mv.nbytes <= LARGE_RECORD
        if small:
            rx._obj_in_place = False  # back to recv() for the next one
        if not small or (mv.nbytes and (mv[0] == VALUE_TAG or (ser.out_of_band and mv[0] == 0))):
            return _decode_copy(ser, mv)
        data = bytes(mv)  # pickle reads bytes faster than a view
    finally:
        rx._release()
    try:
        return ser.loads(data, ())
    except Exception as e:
        raise _decode_error(ser, e) from e


def _take_copy(rx: ObjectReceiver, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """Receive one object that owns its memory.

    A value record is decoded in place by one C call (``_recv_value``).
    Other small records come as ``bytes`` from one C call (``recv``), which
    is also what pickle reads fastest. A large framed record taken that way
    costs a second copy of each writable buffer, so after one the consumer
    switches to reading records in place until a small one comes again.
    """
    if ser.__class__ is PickleSerializer:
        start = None if timeout is None else time.monotonic()
        obj = rx._recv_value(None if nowait else timeout, nowait)
        if obj is not NotImplemented:
            return obj
        # Not a value record: it is held, and taken below at once.
        timeout = _left(timeout, start)
    return _take_other(rx, ser, timeout, nowait)


def _take_other(rx: ObjectReceiver, ser: Serializer, timeout: float | None, nowait: bool) -> Any:
    """:func:`_take_copy` for records other than value records."""
    if rx._stream is not None:
        return _stream_take(rx, ser, timeout, nowait, True)
    if rx._obj_in_place:
        return _take_in_place(rx, ser, timeout, nowait)
    start = None if timeout is None else time.monotonic()
    data = rx.recv_nowait() if nowait else rx.recv(timeout)
    if data[:1] == b"\x00" and ser.out_of_band and _is_stream(data):
        return _stream_take(rx, ser, _left(timeout, start), nowait, True, data=data)
    return decode_bytes(rx, ser, data)


def decode_bytes(rx: ObjectReceiver, ser: Serializer, data: bytes) -> Any:
    """Decode one received record that arrived as ``bytes``: a plain pickle
    goes straight to ``pickle.loads``, anything framed through the serializer."""
    if data[:1] == b"\x80" and ser.__class__ is PickleSerializer:
        try:
            return _loads(data)
        except Exception as e:
            raise _decode_error(ser, e) from e
    return _decode_owned(rx, ser, data)


def _take_view(rx: ObjectReceiver, ser: Serializer, timeout: float | None,
               nowait: bool) -> ObjectView:
    if rx._stream is not None:
        return _stream_take(rx, ser, timeout, nowait, False)  # type: ignore[no-any-return]
    start = None if timeout is None else time.monotonic()
    mv = _peek(rx, timeout, nowait)
    if ser.out_of_band and _is_stream(mv):
        return _stream_take(rx, ser, _left(timeout, start), nowait, False, mv=mv)  # type: ignore[no-any-return]
    return _view_of(rx, ser, mv)


# ------------------------------------- the Python paths of the C recv_obj --
def _recv_obj(self: ObjectReceiver, timeout: float | None = None, *, copy: bool = True,
              serializer: Serializer | None = None) -> Any:
    """``Consumer.recv_obj`` for the calls its C method hands over (another
    serializer, ``copy=False``, a record that is not a value record); the
    method and its overloads are documented in ``_core.pyi``."""
    ser = self.serializer if serializer is None else serializer
    if copy and ser.__class__ is PickleSerializer:
        # A value record: decoded from the ring by one C call.
        start = None if timeout is None else time.monotonic()
        obj = self._recv_value(timeout)
        if obj is not NotImplemented:
            return obj
        # Otherwise the record is held and _recv_other takes it at once.
        timeout = _left(timeout, start)
    if copy:
        return _recv_other(self, timeout, ser)
    return _take_view(self, ser, timeout, False)


def _recv_other(self: ObjectReceiver, timeout: float | None, ser: Serializer) -> Any:
    """recv_obj (copy=True) for records other than value records."""
    if not self._obj_in_place and self._stream is None:
        # _take_other's common case, inlined: one C call and pickle.loads.
        start = None if timeout is None else time.monotonic()
        data = self.recv(timeout)
        if data[:1] == b"\x80" and ser.__class__ is PickleSerializer:
            try:
                return _loads(data)
            except Exception as e:
                raise _decode_error(ser, e) from e
        if data[:1] == b"\x00" and ser.out_of_band and _is_stream(data):
            return _stream_take(self, ser, _left(timeout, start), False, True, data=data)
        return _decode_owned(self, ser, data)
    return _take_other(self, ser, timeout, False)


# Producer.send_obj and Consumer.recv_obj are C methods (csrc/py/objects.c) that
# handle the common call - the default serializer, a plain value, copy=True -
# without a Python frame, and hand every other call to the functions above.
