"""The table of pattern traits (``_layout.TRAITS``) tells the truth: its codes
are the extension's, the pattern sets the code uses derive from it, and each
trait shows in what a channel of that pattern accepts and delivers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._layout import TRAITS


def test_one_row_per_pattern_with_the_extensions_code() -> None:
    assert list(TRAITS) == list(L.PATTERNS)
    for name, t in TRAITS.items():
        assert t.name == name
        assert t.code == L.PATTERNS[name] == _core.LAYOUT["PATTERN_" + name.upper()]


def test_pattern_sets_derive_from_the_table() -> None:
    assert {L.PATTERN_NAMES[c] for c in L.MULTI_PRODUCER} == {"mpsc", "mpmc"}
    assert {L.PATTERN_NAMES[c] for c in L.SINGLE_CONSUMER} == {"spsc", "mpsc"}


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_traits_show_in_behaviour(make_channel: Callable[..., shmring.Channel],
                                  pattern: str) -> None:
    t = TRAITS[pattern]
    ch = make_channel(pattern)
    tx = ch.producer()
    if t.multi_producer:
        ch.producer().close()
    else:
        with pytest.raises(shmring.RoleTaken):
            ch.producer()
    rx = ch.consumer()
    if not t.multi_consumer:
        with pytest.raises(shmring.RoleTaken):
            ch.consumer()
        return
    rx2 = ch.consumer()
    tx.send_many([b"a", b"b"])
    if t.fan_out:  # each consumer sees both
        assert [rx.recv(timeout=1), rx.recv(timeout=1)] == [b"a", b"b"]
        assert [rx2.recv(timeout=1), rx2.recv(timeout=1)] == [b"a", b"b"]
    else:  # each message goes to one of them
        assert sorted([rx.recv(timeout=1), rx2.recv(timeout=1)]) == [b"a", b"b"]
        with pytest.raises(shmring.WouldBlock):
            rx.recv_nowait()


@pytest.mark.parametrize("pattern", list(TRAITS))
def test_lossy_is_accepted_where_the_table_says(make_channel: Callable[..., shmring.Channel],
                                                uname: str, pattern: str) -> None:
    if TRAITS[pattern].can_be_lossy:
        assert make_channel(pattern, lossy=True).region.lossy
    else:
        with pytest.raises(shmring.InvalidArgument):
            shmring.Channel.create(uname, capacity=4096, pattern=pattern, lossy=True)
