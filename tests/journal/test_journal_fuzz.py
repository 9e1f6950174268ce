"""Corrupt and hostile bytes in a journal's files: random byte flips,
truncations, hostile length fields. Reading the journal whole then either
raises CorruptJournal (a CorruptRegion) naming the file and the offset, or
gives back exactly what was written (the bytes hit were not read, such as
padding); never a crash, a hang or a read out of bounds."""

from __future__ import annotations

import os
import random
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest
from journal_util import CTX, expect_corrupt_or_same, payload, read_all

import shmring
from shmring._errors import CorruptJournal
from shmring._journal import Journal
from shmring._journal import format as F
from shmring._journal.segment import list_segments

TRIALS = 60


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[tuple[int, bytes]]]:
    path = str(tmp_path_factory.mktemp("fuzz") / "j")
    with Journal.create(path, segment_size=16 << 10) as j:
        w = j.writer()
        for seq in range(400):
            w.append(payload(9, seq))
        w.flush()
    return path, read_all(path)


def _record_offsets(file: str) -> list[int]:
    with open(file, "rb") as f:
        raw = memoryview(f.read())
    _, _, data_off = F.geometry(F.SEG_HEADER.unpack_from(raw)[3])
    out: list[int] = []
    off = data_off
    while True:
        r = F.read_record(raw, off, len(raw))
        if not isinstance(r, F.Rec):
            return out
        out.append(off)
        if r.kind == F.KIND_END:
            return out
        off = r.next_off


def _damage(path: str, rng: random.Random) -> str:
    files = [f for _, f in list_segments(path)] + [os.path.join(path, "journal.meta")]
    file = rng.choice(files[:-1]) if rng.random() < 0.9 else files[-1]
    size = os.path.getsize(file)
    what = rng.choice(("flip", "flip", "truncate", "length") if file.endswith(".seg")
                      else ("flip",))
    with open(file, "r+b") as f:
        if what == "flip":
            for _ in range(rng.randint(1, 8)):
                # Mostly where records are (the first 8 KiB), sometimes anywhere.
                at = rng.randrange(min(size, 8192) if rng.random() < 0.8 else size)
                f.seek(at)
                b = f.read(1)[0]
                f.seek(at)
                f.write(bytes([b ^ (1 << rng.randrange(8))]))
        elif what == "truncate":
            f.truncate(rng.randrange(size))
        else:
            offs = _record_offsets(file)
            if offs:
                at = rng.choice(offs)
                f.seek(at)
                n = rng.choice((1 << 27, (1 << 28) - 1, size, rng.randrange(1 << 28)))
                f.write(struct.pack("<I", (n << F.KIND_BITS) | rng.choice((1, 2, 3, 15))))
    return what


def test_damage_is_corrupt_journal_or_unseen(
        tmp_path: Path, original: tuple[str, list[tuple[int, bytes]]]) -> None:
    src, records = original
    outcomes: Counter[str] = Counter()
    for trial in range(TRIALS):
        rng = random.Random(trial)
        path = str(tmp_path / f"t{trial}")
        shutil.copytree(src, path)
        kind = ""

        def damage(path: str = path, rng: random.Random = rng) -> None:
            nonlocal kind
            kind = _damage(path, rng)

        outcomes[expect_corrupt_or_same(path, records, damage) + ":" + kind] += 1
        shutil.rmtree(path)
    corrupt = sum(n for k, n in outcomes.items() if k.startswith("corrupt"))
    assert corrupt >= TRIALS // 2, outcomes
    assert {k.split(":")[1] for k in outcomes if k.startswith("corrupt")} >= {
        "flip", "truncate", "length"}, outcomes


def test_corrupt_journal_names_file_and_offset(
        tmp_path: Path, original: tuple[str, list[tuple[int, bytes]]]) -> None:
    src, _ = original
    path = str(tmp_path / "j")
    shutil.copytree(src, path)
    first_seq, first = next((s, f) for s, f in list_segments(path)[1:]
                            if len(_record_offsets(f)) > 3)
    at = _record_offsets(first)[2] + F.REC_SIZE  # a payload byte of its third record
    with open(first, "r+b") as f:
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ 0xFF]))
    with Journal.open(path) as j:
        r = j.reader(timeout=0)
        with pytest.raises(CorruptJournal) as e:
            list(r)
        assert r.seq == first_seq + 2  # records before it were read
    assert isinstance(e.value, shmring.CorruptRegion)
    assert e.value.path == first and e.value.offset == at - F.REC_SIZE
    assert f"{first} at offset {at - F.REC_SIZE}" in str(e.value)


def _truncate_under_reader(path: str, out: object) -> None:
    with Journal.open(path) as j:
        r = j.reader(timeout=0)
        assert r.read()[0] == 0  # the first segment is mapped now
        first = list_segments(path)[0][1]
        os.truncate(first, F.PAGE)  # past the index: records are gone under the mapping
        try:
            list(r)
        except CorruptJournal as e:
            out.put(("corrupt", e.path, str(e)))  # type: ignore[attr-defined]
        else:
            out.put(("read", None, ""))  # type: ignore[attr-defined]


def test_a_segment_truncated_under_a_reader_is_corrupt_not_sigbus(
        tmp_path: Path, original: tuple[str, list[tuple[int, bytes]]]) -> None:
    src, _ = original
    path = str(tmp_path / "j")
    shutil.copytree(src, path)
    q = CTX.Queue()
    p = CTX.Process(target=_truncate_under_reader, args=(path, q))
    p.start()
    p.join(60)
    assert p.exitcode == 0  # no SIGBUS
    kind, file, text = q.get(timeout=5)
    assert kind == "corrupt" and file == list_segments(path)[0][1], text
    assert "truncated while mapped" in text  # the SIGBUS guard caught the fault
