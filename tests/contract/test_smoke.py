"""First checks of the public surface, in one process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import shmring
from shmring._layout import TRAITS


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_send_recv_roundtrip(make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    ch = make_channel(pattern, 1 << 12)
    tx, rx = ch.producer(), ch.consumer()
    for i in range(5000):
        msg = i.to_bytes(4, "little") * (i % 60 + 1)
        tx.send(msg)
        assert rx.recv() == msg
    with pytest.raises(shmring.WouldBlock):
        rx.recv_nowait()
