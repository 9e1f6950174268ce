"""The bridge's frames: a DATA batch decodes to exactly what was packed,
and malformed frames are a typed error, never a wrong record."""

from __future__ import annotations

import os

import pytest

import shmring
from shmring import InvalidArgument, _core
from shmring._bridge import wire


def test_a_batch_round_trips() -> None:
    payloads = [b"", b"a", bytes(range(256)) * 40, b"xyz"]
    seqs = [16, 48, 10_000, 10_032]
    index, body = wire.batch(7, 3, seqs, payloads, missed=5)
    b = wire.Batch(index, memoryview(body))
    assert (b.epoch, b.prev, b.missed) == (7, 3, 5)
    assert list(b.seqs) == seqs and len(b) == 4
    assert [bytes(p) for p in b.payloads] == payloads


def test_a_batch_commits_from_its_frames_and_refuses_keys_out_of_order() -> None:
    ch = shmring.Channel.create(f"wire-{os.getpid()}", 4096, "spsc", supervised=False)
    try:
        tx, rx = ch.producer(), ch.consumer()
        b = wire.Batch(*_frames(wire.batch(9, 0, [3, 4, 7], [b"x", b"yy", b"zzz"])))
        assert tx._send_fed_packed(b.body, b.lens, b.seqs, b.epoch, 1) == 2  # the first skipped
        assert [rx.recv(timeout=1) for _ in range(2)] == [b"yy", b"zzz"]
        assert _core.fed_state(ch.region._mapping()) == (9, 7)
        bad = wire.Batch(*_frames(wire.batch(9, 7, [8, 8], [b"a", b"b"])))
        with pytest.raises(InvalidArgument, match="increase"):
            tx._send_fed_packed(bad.body, bad.lens, bad.seqs, bad.epoch, 0)
        rx.close()
        tx.close()
    finally:
        ch.close()
        ch.unlink()


def _frames(frames: tuple[bytes, bytes]) -> tuple[bytes, memoryview]:
    return frames[0], memoryview(frames[1])


def test_keys_and_json_round_trip() -> None:
    assert wire.unkey(wire.key(2**64 - 1, 12)) == (2**64 - 1, 12)
    assert wire.load(wire.dump({"a": [1, "b"]})) == {"a": [1, "b"]}


@pytest.mark.parametrize("index, body", [
    (b"", b""),  # no header
    (wire.batch(1, 0, [1, 2], [b"a", b"b"])[0][:-1], b"ab"),  # index cut short
    (wire.batch(1, 0, [1, 2], [b"a", b"b"])[0], b"abc"),  # body longer than the lengths
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
