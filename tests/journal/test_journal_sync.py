"""The sync= policies: when durable_seq moves, seen by the writer and by
another process through the meta page."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from journal_util import payload

from shmring._journal import Journal

SEG = 1 << 20


def test_none_moves_only_on_flush_and_roll(tmp_path: Path) -> None:
    with Journal.create(str(tmp_path / "j"), segment_size=SEG, sync="none") as j:
        w = j.writer()
        for seq in range(100):
            w.append(payload(6, seq))
        assert j.durable_seq == 0
        assert w.flush() == 100 == j.durable_seq
        with Journal.open(j.path) as other:  # another opener reads the meta page
            assert other.durable_seq == 100 and other.next_seq == 100
        while w.next_seq < 2000 and len(j.info()["segments"]) == 1:
            w.append(payload(6, w.next_seq))
        first_of_second = j.info()["segments"][1]["first_seq"]
        assert j.durable_seq == first_of_second  # sealing a segment msyncs it


def test_always_makes_every_append_durable(tmp_path: Path) -> None:
    with Journal.create(str(tmp_path / "j"), segment_size=SEG, sync="always") as j:
        w = j.writer()
        for seq in range(50):
            w.append(payload(6, seq))
            assert j.durable_seq == seq + 1


def test_bytes_policy_syncs_after_n_bytes(tmp_path: Path) -> None:
    with Journal.create(str(tmp_path / "j"), segment_size=SEG, sync="bytes:10000") as j:
        w = j.writer()
        w.append(bytes(100))
        assert j.durable_seq == 0  # 132 bytes appended: under the budget
        w.append(bytes(10000))
        assert j.durable_seq == 2


@pytest.mark.parametrize("ms", [2, 20])
def test_interval_policy_flushes_in_the_background(tmp_path: Path, ms: int) -> None:
    with Journal.create(str(tmp_path / "j"), segment_size=SEG, sync=f"interval:{ms}ms") as j:
        w = j.writer()
        t0 = time.monotonic()
        for seq in range(20):
            w.append(payload(6, seq))
        with Journal.open(j.path) as other:
            deadline = time.monotonic() + 10
            while other.durable_seq < 20 and time.monotonic() < deadline:
                time.sleep(0.001)
            took = time.monotonic() - t0
            assert other.durable_seq == 20
        assert took < 10
