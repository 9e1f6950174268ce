"""Serializers: how objects become bytes, and how large buffers leave the pickle.

Pickle protocol 5 hands large buffers (numpy arrays, :class:`pickle.PickleBuffer`)
to a callback instead of copying them into the pickle stream. The default
:class:`PickleSerializer` takes them *out of band*: the pickle bytes, which
describe the object and are small, and each buffer beside them, which the
sender writes straight into one claimed record (``frame.py``). No
intermediate ``bytes`` object ever holds an array.

``bytes``, ``bytearray`` and ``memoryview`` at the top level are wrapped so
that they too travel out of band. What was rejected: ``persistent_id`` to
catch ``bytes`` nested in containers (a Python call per pickled object, which
doubles the cost of small objects). So nested ones go in band unless wrapped
in :class:`pickle.PickleBuffer`.

JSON and msgspec serializers own the whole record (no out-of-band buffers):
what their ``dumps`` returns is exactly what a reader in another language sees.
"""

from __future__ import annotations

import abc
import json
import pickle
from collections.abc import Callable, Sequence
from pickle import PickleBuffer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "PICKLE",
    "JSONSerializer",
    "MsgspecSerializer",
    "PickleSerializer",
    "Serializer",
]


class Serializer(abc.ABC):
    """How objects become bytes: pickle by default, or JSON / msgpack for
    peers written in other languages.

    A serializer with ``out_of_band = True`` may hand large buffers to the
    ``buffers`` list given to :meth:`dumps`; they travel beside its bytes in
    one record and come back to :meth:`loads`. Its bare bytes must never
    start with ``0x00`` (that byte marks a framed record). A serializer with
    ``out_of_band = False`` owns the whole record: what :meth:`dumps` returns
    is exactly what a reader in another language sees.

    Example, a serializer of UTF-8 strings (fragment)::

        class Text(shmring.Serializer):
            def dumps(self, obj, buffers):
                return obj.encode()
            def loads(self, data, buffers=()):
                return str(data, "utf-8")

        tx.send_obj("hi", serializer=Text())
    """

    #: True if :meth:`dumps` may return out-of-band buffers.
    out_of_band: bool = False

    @abc.abstractmethod
    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> ReadableBuffer:
        """Serialize ``obj``; append out-of-band buffers to ``buffers``
        (only if :attr:`out_of_band`)."""

    @abc.abstractmethod
    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Rebuild an object from the bytes (and buffers) :meth:`dumps` made."""


class PickleSerializer(Serializer):
    """Pickle protocol 5 with out-of-band buffers (the default).

    Buffers totalling at least ``oob_threshold`` bytes (numpy arrays,
    :class:`pickle.PickleBuffer`, and top-level ``bytes``, ``bytearray`` and
    C-contiguous ``memoryview``) travel out of band; smaller ones are cheaper
    in the pickle stream. ``oob_threshold=0`` sends every buffer out of band.

    Example (fragment)::

        tx.send_obj({"frame": np.zeros((1080, 1920, 3), np.uint8), "seq": 7})
        msg = rx.recv_obj()        # msg["frame"] is a writable copy
    """

    out_of_band = True

    def __init__(self, oob_threshold: int = 8192) -> None:
        if oob_threshold < 0:
            raise ValueError("oob_threshold must be >= 0")
        self.oob_threshold = oob_threshold

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """Pickle ``obj``, its large buffers into ``buffers``."""
        if type(obj) in _WRAPPABLE:
            obj = _wrap_bytes_like(obj, self.oob_threshold)
        data = _dumps(obj, 5, buffer_callback=buffers.append)
        if buffers:
            data = self._inband_if_small(obj, data, buffers)
        return data

    def _inband_if_small(self, obj: Any, data: bytes, buffers: list[PickleBuffer]) -> bytes:
        threshold = self.oob_threshold
        if threshold and sum(memoryview(b).nbytes for b in buffers) < threshold:
            buffers.clear()
            return _dumps(obj, 5)
        return data

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Unpickle, giving pickle the received out-of-band buffers."""
        return _loads(data, buffers=buffers)

    def __repr__(self) -> str:
        return f"PickleSerializer(oob_threshold={self.oob_threshold})"

    def __eq__(self, other: object) -> bool:
        return type(other) is PickleSerializer and other.oob_threshold == self.oob_threshold

    def __hash__(self) -> int:
        return hash((PickleSerializer, self.oob_threshold))


class JSONSerializer(Serializer):
    """Compact UTF-8 JSON, one document per record: readable from any language.

    ``default`` and ``object_hook`` are passed to :func:`json.dumps` and
    :func:`json.loads`. Example (fragment)::

        tx.serializer = rx.serializer = shmring.JSONSerializer()
        tx.send_obj({"price": 101.5, "sym": "ABC"})
        assert rx.recv_obj() == {"price": 101.5, "sym": "ABC"}
    """

    def __init__(
        self,
        *,
        default: Callable[[Any], Any] | None = None,
        object_hook: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._default = default
        self._object_hook = object_hook

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """``obj`` as compact JSON text, UTF-8."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          default=self._default).encode()

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Parse one JSON document."""
        return json.loads(str(data, "utf-8"), object_hook=self._object_hook)

    def __repr__(self) -> str:
        return "JSONSerializer()"


class MsgspecSerializer(Serializer):
    """msgspec's msgpack (default) or JSON codec: fast, typed, and readable
    from other languages. Needs the ``msgspec`` package.

    ``type`` is what :meth:`loads` decodes into (``msgspec.Struct`` classes
    are validated). Example (fragment)::

        ser = shmring.MsgspecSerializer()
        tx.send_obj({"id": 1, "tags": ["a"]}, serializer=ser)
        assert rx.recv_obj(serializer=ser) == {"id": 1, "tags": ["a"]}
    """

    def __init__(self, protocol: Literal["msgpack", "json"] = "msgpack",
                 type: Any = Any) -> None:
        try:
            import msgspec
        except ImportError as e:
            raise ImportError("MsgspecSerializer needs msgspec: pip install msgspec") from e
        if protocol == "msgpack":
            self._enc: Any = msgspec.msgpack.Encoder()
            self._dec: Any = msgspec.msgpack.Decoder(type)
        elif protocol == "json":
            self._enc = msgspec.json.Encoder()
            self._dec = msgspec.json.Decoder(type)
        else:
            raise ValueError(f"protocol must be 'msgpack' or 'json', not {protocol!r}")
        self.protocol = protocol
        self._type = type

    def dumps(self, obj: Any, buffers: list[PickleBuffer]) -> bytes:
        """Encode ``obj``."""
        return self._enc.encode(obj)  # type: ignore[no-any-return]

    def loads(self, data: ReadableBuffer, buffers: Sequence[ReadableBuffer] = ()) -> Any:
        """Decode one message."""
        return self._dec.decode(data)

    def __repr__(self) -> str:
        return f"MsgspecSerializer({self.protocol!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (MsgspecSerializer, (self.protocol, self._type))


#: The serializer endpoints use unless told otherwise.
PICKLE = PickleSerializer()
_dumps = pickle.dumps
_loads = pickle.loads


# ----------------------------------------- top-level bytes-like objects --
# pickle writes bytes and bytearray in band before any hook sees them, so a
# large one at the top level is wrapped: its reduction hands the buffer out
# of band and rebuilds the same type. bytes(b) of a bytes object is b itself,
# so a received bytes costs one copy in all. The pickles name these functions
# (shmring._objects._rebuild_*): they are part of the wire format, so they
# carry that module name whichever file defines them (_objects/__init__.py
# re-exports them), and moving this file changes no pickle.
def _rebuild_bytes(buf: Any) -> bytes:
    return buf if type(buf) is bytes else bytes(buf)


def _rebuild_bytearray(buf: Any) -> bytearray:
    return buf if type(buf) is bytearray else bytearray(buf)


def _rebuild_memoryview(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    m = memoryview(buf)
    if fmt == "B" and len(shape) == 1:
        return m
    flat: Any = m.cast("B")  # fmt is checked at send time; typeshed wants a literal
    shaped: memoryview = flat.cast(fmt, shape)
    return shaped


class _OutOfBand:
    """A top-level bytes-like object whose reduction hands its buffer out of
    band (or, for a small memoryview, in band: pickle cannot pickle one)."""

    __slots__ = ("inband", "obj")

    def __init__(self, obj: bytes | bytearray | memoryview, inband: bool = False) -> None:
        self.obj = obj
        self.inband = inband

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        obj = self.obj
        if type(obj) is bytes:
            return (_rebuild_bytes, (PickleBuffer(obj),))
        if type(obj) is bytearray:
            return (_rebuild_bytearray, (PickleBuffer(obj),))
        assert isinstance(obj, memoryview)
        if self.inband:
            data = obj.tobytes() if obj.readonly else bytearray(obj)
            return (_rebuild_memoryview, (data, obj.format, obj.shape))
        return (_rebuild_memoryview, (PickleBuffer(obj), obj.format, obj.shape))


for _f in (_rebuild_bytes, _rebuild_bytearray, _rebuild_memoryview):
    _f.__module__ = "shmring._objects"
del _f

_WRAPPABLE = frozenset({bytes, bytearray, memoryview})


def _wrap_bytes_like(obj: Any, threshold: int) -> Any:
    if type(obj) is memoryview:
        fmt = obj.format.removeprefix("@")
        if len(fmt) != 1 or not obj.c_contiguous or obj.ndim == 0:
            return obj  # pickle refuses it, as it always did
        return _OutOfBand(obj, inband=obj.nbytes < threshold)
    return _OutOfBand(obj) if len(obj) >= threshold else obj

