"""How a queue pickles an item: as ``multiprocessing.Queue`` does, with
``multiprocessing.reduction.ForkingPickler``'s reducers, so that
Connections, sockets and other objects with a file-descriptor reducer travel
to another process as they do through multiprocessing's queues (plain pickle
would send a Connection as the bare number of its descriptor, which in the
receiver names some other file: the queue's own region, once). What cannot
travel raises in ``put``, as multiprocessing raises in its feeder thread.

A ``ForkingPickler`` is an ordinary C pickler whose dispatch table holds
multiprocessing's reducers; making one per item costs about 1.3 us, so each
thread keeps two (one with an out-of-band buffer callback, one without) and
reuses them, which costs about 50 ns over ``pickle.dumps``. A pickler's table
is a copy made when it is made, so they are made again when a reducer is
registered since (``copyreg.pickle``, ``ForkingPickler.register``).
"""

from __future__ import annotations

import copyreg
import io
import threading
from multiprocessing.reduction import ForkingPickler
from pickle import PickleBuffer
from typing import Any


class _Picklers(threading.local):
    """This thread's reusable picklers and the buffers the first collects."""

    def __init__(self) -> None:
        self.tables = (-1, -1)
        self.file = io.BytesIO()
        self.collected: list[PickleBuffer] = []
        self.oob: Any = None
        self.inband: Any = None
        self.busy = False

    def ready(self) -> None:
        extra: dict[Any, Any] = getattr(ForkingPickler, "_extra_reducers", {})
        tables = (len(copyreg.dispatch_table), len(extra))
        if tables != self.tables or self.oob is None:
            self.oob = ForkingPickler(self.file, 5, True, self.collected.append)
            self.inband = ForkingPickler(self.file, 5)
            self.tables = tables


_local = _Picklers()


def dumps(obj: Any, buffers: list[PickleBuffer] | None) -> bytes:
    """Pickle ``obj`` (protocol 5) with multiprocessing's reducers; its
    out-of-band buffers go into ``buffers``, or in band if None."""
    st = _local
    if st.busy:  # an object's reducer pickles again (it puts into a queue, say)
        f = io.BytesIO()
        if buffers is None:
            ForkingPickler(f, 5).dump(obj)
        else:
            ForkingPickler(f, 5, True, buffers.append).dump(obj)
        return f.getvalue()
    st.busy = True
    try:
        st.ready()
        f = st.file
        f.seek(0)
        f.truncate()
        pickler = st.inband if buffers is None else st.oob
        st.collected.clear()
        try:
            pickler.dump(obj)
        finally:
            pickler.clear_memo()
        if buffers is not None:
            buffers.extend(st.collected)
            st.collected.clear()
        return f.getvalue()
    finally:
        st.busy = False
