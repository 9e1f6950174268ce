"""The bridge's frames: a DATA batch decodes to exactly what was packed,
and malformed frames are a typed error, never a wrong record."""

from __future__ import annotations

import pytest

from shmring import InvalidArgument
from shmring._bridge import wire


def test_a_batch_round_trips() -> None:
    payloads = [b"", b"a", bytes(range(256)) * 40, b"xyz"]
    seqs = [16, 48, 10_000, 10_032]
    index, body = wire.batch(7, 3, seqs, payloads, missed=5)
    b = wire.Batch(index, memoryview(body))
    assert (b.epoch, b.prev, b.missed) == (7, 3, 5)
    assert b.seqs == seqs
    assert [bytes(p) for p in b.payloads] == payloads


def test_keys_and_json_round_trip() -> None:
    assert wire.unkey(wire.key(2**64 - 1, 12)) == (2**64 - 1, 12)
    assert wire.load(wire.dump({"a": [1, "b"]})) == {"a": [1, "b"]}


@pytest.mark.parametrize("index, body", [
    (b"", b""),  # no header
    (wire.batch(1, 0, [1, 2], [b"a", b"b"])[0][:-1], b"ab"),  # index cut short
    (wire.batch(1, 0, [1, 2], [b"a", b"b"])[0], b"abc"),  # body longer than the lengths
    (wire.batch(1, 0, [2, 2], [b"a", b"b"])[0], b"ab"),  # keys not increasing
    (wire.batch(1, 5, [3, 9], [b"a", b"b"])[0], b"ab"),  # a key not after prev
])
def test_malformed_batches_are_refused(index: bytes, body: bytes) -> None:
    with pytest.raises(InvalidArgument):
        wire.Batch(index, memoryview(body))


@pytest.mark.parametrize("frame", [b"{", b"[1]", b"\xff", b"1"])
def test_malformed_control_messages_are_refused(frame: bytes) -> None:
    with pytest.raises(InvalidArgument):
        wire.load(frame)


def test_a_bad_key_frame_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        wire.unkey(b"\x00" * 15)
