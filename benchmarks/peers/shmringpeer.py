"""shmring: the system under test.

The parent creates the channel (and unlinks it afterwards); each child opens
it by name. Single-producer streams end with ``close_send()``, which consumers
see as ``EndOfStream``; fan-in producers each send a sentinel instead.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, ClassVar

from .base import Peer, Receiver, Sender, Topology, buffer_bytes, unique_name

PATTERNS = {"p2p": "spsc", "fanout": "broadcast", "fanin": "mpsc", "workqueue": "mpmc"}


class _Sender(Sender):
    def __init__(self, name: str, topo: Topology) -> None:
        import shmring

        self._ch = shmring.Channel.open(name)
        self._tx = tx = self._ch.producer()
        self._single = topo.producers == 1
        self.send = tx.send
        self.send_many = tx.send_many
        if hasattr(tx, "send_obj"):
            self.send_obj = tx.send_obj

    def finish(self, copies: int, objects: bool) -> None:
        if self._single:
            self._ch.close_send()
        else:
            super().finish(copies, objects)

    def close(self) -> None:
        self._ch.close()


class _Receiver(Receiver):
    def __init__(self, name: str, topo: Topology) -> None:
        import shmring

        self._shmring = shmring
        self._ch = shmring.Channel.open(name)
        self._rx = rx = self._ch.consumer()
        self.recv = rx.recv
        self.recv_many = functools.partial(rx.recv_many, topo.batch)
        self.recv_view = rx.recv_view
        if hasattr(rx, "recv_obj"):
            self.recv_obj = rx.recv_obj
        self.eos = (shmring.EndOfStream,)

    def wait_idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            self._rx.recv(timeout=seconds)

    def close(self) -> None:
        self._ch.close()


class Shmring(Peer):
    """Channel.create(pattern=spsc|broadcast|mpsc|mpmc) in the parent, open() in children."""

    name = "shmring"
    label = "shmring"
    notes: ClassVar[dict[str, str]] = {
        "small_batch": "send_many / recv_many",
        "large_view": "recv_view()",
    }

    def check(self) -> str | None:
        try:
            import shmring
        except ImportError as exc:
            return f"not importable ({exc})"
        native = hasattr(shmring.Producer, "send_obj") and hasattr(shmring.Consumer, "recv_obj")
        self._obj_note = "send_obj / recv_obj" if native else "pickle + send / recv + unpickle"
        return None

    def note(self, bench: str) -> str:
        if bench.startswith("obj_"):
            return getattr(self, "_obj_note", "")
        return super().note(bench)

    def version(self) -> str:
        import shmring

        return getattr(shmring, "__version__", "?")

    def setup(self, topo: Topology) -> Any:
        import shmring

        name = unique_name("shmbench")
        channel = shmring.Channel.create(
            name, capacity=buffer_bytes(topo), pattern=PATTERNS[topo.kind]
        )
        return name, channel

    def teardown(self, ctx: Any) -> None:
        _, channel = ctx
        try:
            channel.close()
        finally:
            channel.unlink()

    def sender(self, ctx: Any, topo: Topology, index: int) -> Sender:
        return _Sender(ctx[0], topo)

    def receiver(self, ctx: Any, topo: Topology, index: int) -> Receiver:
        return _Receiver(ctx[0], topo)
