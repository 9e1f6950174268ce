"""The measured systems, in table order."""

from __future__ import annotations

from .base import Peer
from .fasterfifo import FasterFifo
from .floor import MemcpyFloor
from .iceoryx import Iceoryx2
from .shmringpeer import Shmring
from .stdlib import MpPipe, MpQueue
from .zmqpeer import Zmq


def all_peers() -> list[Peer]:
    """shmring first (the ratio column is relative to it), the floor last."""
    return [Shmring(), MpQueue(), MpPipe(), FasterFifo(), Zmq(), Iceoryx2(), MemcpyFloor()]


__all__ = ["Peer", "all_peers"]
