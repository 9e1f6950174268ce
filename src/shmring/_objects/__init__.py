"""Python objects over the endpoint cores: ``tx.send_obj(obj)``, ``rx.recv_obj()``.

The package sits below the channel: it imports only ``_core``, ``_errors``
and ``_layout``, and knows an endpoint only as its C core (whose properties
give the channel's ``max_message``, pattern and lossiness). ``shmring.Producer``
and ``shmring.Consumer`` inherit its mixins :class:`~.send.ObjectSender` and
:class:`~.recv.ObjectReceiver`.

- ``serializers.py``: Serializer, PickleSerializer (out-of-band buffers),
  JSONSerializer, MsgspecSerializer;
- ``frame.py``: the record kinds (value, bare, framed) and the framed format;
- ``stream.py``: objects larger than a record, in chunk records;
- ``view.py``: ObjectView, a record held while its object is read in place;
- ``send.py``, ``recv.py``: the send and receive paths.

Why it is built this way: pickle protocol 5 hands large buffers to a
callback, so an 8 MB array is copied exactly once on the way in (array ->
ring) and once on the way out (ring -> the received array), or not at all
with ``copy=False``; a plain value skips pickle altogether (the C value
codec). ``send_obj`` and ``recv_obj`` are C methods of the cores
(``csrc/py/objects.c``) that handle the common call without a Python frame and
hand every other call to the Python paths this package registers once, below.
"""

from __future__ import annotations

from .. import _core
from .recv import _recv_obj, _recv_other
from .send import _send_encoded, _send_obj
from .serializers import (
    PickleSerializer,
    _rebuild_bytearray,
    _rebuild_bytes,
    _rebuild_memoryview,
)

# The pickles of top-level bytes-like objects name these functions as
# shmring._objects._rebuild_* (see serializers.py): keep them reachable here.
__all__ = ["_rebuild_bytearray", "_rebuild_bytes", "_rebuild_memoryview"]

_core.set_object_paths(PickleSerializer, _send_obj, _send_encoded, _recv_obj, _recv_other)
