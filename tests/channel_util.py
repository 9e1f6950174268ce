"""What the channel contract tests share: the kinds of channel (a pattern,
lossy or not, with its traits from ``shmring._layout.TRAITS``), helpers to
fill, drain and tag messages, and two fixtures (a plugin of the top-level
conftest): ``kind`` runs a test once per kind of channel, ``make`` creates
channels of that kind through the shared ``make_channel`` fixture, which
closes them.

One process, checked against spsc, mpsc, mpmc, broadcast and lossy
broadcast alike; where a pattern's contract differs (lossy broadcast never
blocks its producer; single-role patterns refuse a second producer or
consumer) a test says so by branching on the kind's traits, never by
skipping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pattern_util
import pytest

import shmring
from shmring import _layout as L
from shmring._layout import TRAITS

CAPACITY = 4096
WAIT = 5.0  # bound on every wait that is expected to succeed


@dataclass(frozen=True)
class Kind:
    pattern: str
    lossy: bool = False

    @property
    def multi_producer(self) -> bool:
        return TRAITS[self.pattern].multi_producer

    @property
    def multi_consumer(self) -> bool:
        return TRAITS[self.pattern].multi_consumer

    @property
    def fanout(self) -> bool:
        return TRAITS[self.pattern].fan_out

    def __str__(self) -> str:
        return self.pattern + ("-lossy" if self.lossy else "")


KINDS = [Kind(pattern, lossy) for pattern, lossy in pattern_util.KINDS]
LOSSLESS = [k for k in KINDS if not k.lossy]

Make = Callable[..., shmring.Channel]


def record_bytes(n: int) -> int:
    """Ring bytes a message of n payload bytes takes (header, alignment)."""
    a = L.RECORD_ALIGN
    return (n + L.RECORD_HEADER + a - 1) // a * a


def payload(seq: int, size: int) -> bytes:
    """Deterministic contents for message seq of a given size."""
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def tagged(producer: int, seq: int) -> bytes:
    return b"%d:%d:" % (producer, seq) + payload(seq, seq % 37)


def untag(msg: bytes) -> tuple[int, int]:
    p, s, rest = msg.split(b":", 2)
    producer, seq = int(p), int(s)
    assert rest == payload(seq, seq % 37), f"message {producer}:{seq} damaged"
    return producer, seq


def drain(rx: shmring.Consumer) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(rx.recv_nowait())
        except shmring.WouldBlock:
            return out


def fill(tx: shmring.Producer, msg: bytes) -> int:
    """Sends msg until the channel is full; how many went in."""
    n = 0
    while True:
        try:
            tx.send_nowait(msg)
        except shmring.WouldBlock:
            return n
        n += 1
        assert n < 10 * CAPACITY, "never full"


@pytest.fixture(params=KINDS, ids=str)
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


@pytest.fixture
def make(make_channel: Make, kind: Kind) -> Make:
    """Creates channels of this test's kind (``make_channel`` closes them)."""

    def _make(capacity: int = CAPACITY, suffix: str = "", **kw: object) -> shmring.Channel:
        return make_channel(kind.pattern, capacity, suffix=suffix, lossy=kind.lossy, **kw)

    return _make
