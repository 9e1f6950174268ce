"""``_bridge/unacked.py``: chunks of packed records, cut where an
acknowledgement falls inside one, and the count of those sent."""

from __future__ import annotations

from array import array

from shmring._bridge import wire
from shmring._bridge.unacked import Chunk, Unacked


def chunk(keys: list[int], payloads: list[bytes]) -> Chunk:
    return Chunk(array("Q", keys).tobytes(), array("Q", [k * 100 for k in keys]).tobytes(),
                 array("I", map(len, payloads)).tobytes(), b"".join(payloads))


def payloads_of(c: Chunk) -> list[bytes]:
    out, off = [], 0
    for n in c.lens:
        out.append(c.body[off:off + n])
        off += n
    return out


def test_a_chunk_cuts_into_the_records_before_and_after() -> None:
    c = chunk([5, 6, 7, 8], [b"a", b"bb", b"", b"dddd"])
    head, tail = c.cut(2)
    assert head is not None and tail is not None
    assert (list(head.keys), list(head.poss), payloads_of(head)) == ([5, 6], [500, 600],
                                                                     [b"a", b"bb"])
    assert (tail.first, tail.last, tail.n, payloads_of(tail)) == (7, 8, 2, [b"", b"dddd"])
    assert c.cut(0) == (None, c) and c.cut(4) == (c, None)


def test_its_index_is_the_wire_batch_index() -> None:
    c = chunk([9, 10], [b"xy", b"z"])
    index = c.index(77, 8, 3)
    assert index == wire.batch(77, 8, [9, 10], [b"xy", b"z"], 3)[0]
    b = wire.Batch(index, memoryview(c.body))
    assert (b.epoch, b.prev, b.missed, list(b.seqs), list(b.lens)) == (77, 8, 3, [9, 10],
                                                                       [2, 1])


def test_acknowledgements_drop_whole_chunks_and_cut_the_one_they_fall_in() -> None:
    u = Unacked()
    u.add(chunk([1, 2, 3], [b"1", b"22", b"333"]))
    u.add(chunk([4, 5], [b"4444", b"55555"]))
    u.add(chunk([6], [b"6"]))
    assert (len(u), u.bytes) == (6, 16)
    assert u.next_unsent() is not None and u.next_unsent() is not None
    assert not u.all_sent()
    done = u.ack(4)  # the first chunk, and the first record of the second
    assert [list(c.keys) for c in done] == [[1, 2, 3], [4]]
    assert (len(u), u.bytes, u.sent) == (2, 6, 1)  # the cut chunk is still sent
    assert (u.first_pos(), u.low_pos(), u.last_key()) == (500, 500, 6)
    nxt = u.next_unsent()
    assert nxt is not None and list(nxt.keys) == [6]
    assert u.all_sent()
    u.rewind()
    assert u.next_unsent() is not None and u.sent == 1
    assert u.ack(3) == []  # nothing at or below it any more
    assert [list(c.keys) for c in u.ack(100)] == [[5], [6]]
    assert (len(u), u.bytes, u.sent, bool(u)) == (0, 0, 0, False)
