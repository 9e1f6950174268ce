"""``ProducerCore._skip_msgno``: the gap a bridge numbers into a broadcast
ring for messages its subscription upstream missed, counted by every
subscriber that reads past it, once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import shmring


def test_a_numbered_gap_is_counted_missed_by_each_subscriber_once(
        make_channel: Callable[..., shmring.Channel]) -> None:
    ch = make_channel("broadcast", 4096, lossy=True)
    subs = [ch.consumer(), ch.consumer()]
    tx = ch.producer()
    tx.send(b"a")
    assert [s.recv(timeout=1) for s in subs] == [b"a", b"a"]
    tx._skip_msgno(5)
    tx.send(b"b")
    tx.send(b"c")
    for s in subs:
        assert [s.recv(timeout=1), s.recv(timeout=1)] == [b"b", b"c"]
        assert s.missed == 5
    late = ch.consumer()  # joined after the gap: it never was before it
    tx.send(b"d")
    assert late.recv(timeout=1) == b"d"
    assert late.missed == 0


@pytest.mark.parametrize("pattern", ["spsc", "mpsc", "mpmc"])
def test_only_broadcast_numbers_its_messages(
        make_channel: Callable[..., shmring.Channel], pattern: str) -> None:
    tx = make_channel(pattern, 4096).producer()
    with pytest.raises(ValueError, match="broadcast"):
        tx._skip_msgno(1)
