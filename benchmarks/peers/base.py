"""The interface every measured system implements.

A :class:`Peer` sets a channel up in the parent (``setup``/``teardown``) and
opens its ends in the children (``sender``/``receiver``). Ends expose the
system's own bound methods as attributes (``send = queue.put``) so that the
measured loops pay no extra Python call per message.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

SENTINEL = b"\x00"  # end-of-stream marker: data messages are never 1 byte long
_names = itertools.count()


def unique_name(prefix: str = "shmbench") -> str:
    """A channel name unique to this process and call: ``prefix-<pid>-<n>``."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def buffer_bytes(topo: Topology) -> int:
    """Byte capacity for ``topo.depth`` messages: a power of two, at least 16 MiB."""
    need = topo.depth * (topo.msg_size + 64)
    size = 1 << 24
    while size < need:
        size <<= 1
    return size


@dataclass(frozen=True)
class Topology:
    """Shape of one channel: who talks to whom, and how much it must buffer."""

    kind: str  # "p2p" | "fanout" | "fanin" | "workqueue"
    producers: int = 1
    consumers: int = 1
    msg_size: int = 64  # largest message (pickled size for objects)
    depth: int = 4096  # messages in flight before the sender blocks
    batch: int = 64  # messages per send_many / recv_many


class Sender:
    """Producer end. Subclasses set ``send`` (and ``send_many``) in ``__init__``."""

    send: Callable[[bytes], object]
    send_many: Callable[[list[bytes]], object] | None = None

    def send_obj(self, obj: object) -> None:
        """Send a Python object (pickled, unless the system does it natively)."""
        self.send(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def finish(self, copies: int, objects: bool) -> None:
        """Signal the end of this producer's stream to ``copies`` consumers."""
        for _ in range(copies):
            if objects:
                self.send_obj(None)
            else:
                self.send(SENTINEL)

    def close(self) -> None:
        """Release the end (flushing what was sent)."""


class Receiver:
    """Consumer end. Subclasses set ``recv`` (and the optional forms) in ``__init__``."""

    recv: Callable[[], bytes]
    recv_many: Callable[[], list[bytes]] | None = None
    recv_view: Callable[[], AbstractContextManager[memoryview]] | None = None
    eos: tuple[type[BaseException], ...] = ()  # exceptions meaning "end of stream"

    def recv_obj(self) -> Any:
        """Receive a Python object (see :meth:`Sender.send_obj`)."""
        return pickle.loads(self.recv())

    def prepare_idle(self) -> None:
        """Set up whatever :meth:`wait_idle` blocks on (before it is measured)."""

    def wait_idle(self, seconds: float) -> None:
        """Block for ``seconds`` on the empty channel, the way a user would."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the end."""


class Peer:
    """One measured system."""

    name = "?"  # short id, used by --systems and in the JSON
    label = "?"  # row label in the tables
    in_process = False  # True for the memcpy floor: no channel, no children
    unsupported: ClassVar[dict[str, str]] = {}  # bench id -> why it is n/a
    notes: ClassVar[dict[str, str]] = {}  # bench id -> how the system was driven

    def check(self) -> str | None:
        """None when usable here, else the reason it is not (import error...)."""
        return None

    def note(self, bench: str) -> str:
        """How the system was driven on ``bench`` (the table's notes column)."""
        return self.notes.get(bench, "")

    def version(self) -> str:
        """The version measured, for the report header."""
        return ""

    def setup(self, topo: Topology) -> Any:
        """Create the channel in the parent; the result is inherited by the children."""
        raise NotImplementedError

    def teardown(self, ctx: Any) -> None:
        """Destroy what :meth:`setup` created (also after a timeout)."""

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        """Open producer ``index`` in a child process."""
        raise NotImplementedError

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        """Open consumer ``index`` in a child process."""
        raise NotImplementedError

    # Ping-pong: by default two one-way channels, one each direction.
    def pair_setup(self, topo: Topology) -> Any:
        """Create the two directions of a ping-pong."""
        return (self.setup(topo), self.setup(topo))

    def pair_teardown(self, ctx: Any) -> None:
        """Destroy what :meth:`pair_setup` created."""
        for one in ctx:
            self.teardown(one)

    def pair_end(self, ctx: Any, topo: Topology, side: int) -> tuple[Sender, Receiver]:
        """Side 0 (pinger) sends on the first channel; side 1 answers on the second.

        Receivers are opened first: a sender may wait for its receiver to exist.
        """
        rx = self.receiver(ctx[1 - side], topo, 0)
        return self.sender(ctx[side], topo, 0), rx

    def cleanup_all(self) -> None:
        """Called once at the end of the whole run: remove anything left behind."""

    def measure(self, bench: str, duration: float, ring_bytes: int) -> dict[str, float]:
        """In-process systems only: measure ``bench`` for ``duration`` s, channel-sized buffer."""
        raise NotImplementedError
