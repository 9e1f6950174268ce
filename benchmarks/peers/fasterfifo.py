"""faster_fifo.Queue: a circular buffer in shared memory guarded by a mutex."""

from __future__ import annotations

import contextlib
import functools
import queue
from typing import Any, ClassVar

from .base import Peer, Receiver, Sender, Topology, buffer_bytes


def _raw(data: Any) -> Any:
    return data


class _Sender(Sender):
    def __init__(self, q: Any) -> None:
        self.send = q.put
        self.send_many = q.put_many


class _Receiver(Receiver):
    def __init__(self, q: Any, batch: int) -> None:
        self.recv = q.get
        self.recv_many = functools.partial(q.get_many, max_messages_to_get=batch)
        self._q = q

    def wait_idle(self, seconds: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._q.get(timeout=seconds)


class FasterFifo(Peer):
    """Raw bytes (dumps/loads bypass pickle); objects are pickled like everywhere."""

    name = "faster_fifo"
    label = "faster_fifo"
    unsupported: ClassVar[dict[str, str]] = {
        "large_view": "get() returns a copy",
        "fanout": "no broadcast: each item goes to exactly one consumer",
    }
    notes: ClassVar[dict[str, str]] = {"small_batch": "put_many / get_many"}

    def check(self) -> str | None:
        try:
            import faster_fifo  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc})"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return version("faster-fifo")

    def setup(self, topo: Topology) -> Any:
        import faster_fifo

        return faster_fifo.Queue(
            max_size_bytes=buffer_bytes(topo), maxsize=topo.depth, dumps=_raw, loads=bytes
        )

    def teardown(self, ctx: Any) -> None:
        ctx.close()

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        return _Sender(ctx)

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        return _Receiver(ctx, topo.batch)
