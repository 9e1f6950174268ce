"""A failed msync is fatal for the writer: SyncFailed (a Broken and an
OSError) from the call that met it and from every later call, never
retried, and durable_seq does not move past what reached the disk.

A real write-back error, not a mock: an ext4 file system on a loop device
whose backing file is sparse on a tmpfs too small for it, so the blocks
the kernel writes back find no room (mounted by the test, as root, and
taken down in a finally)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shmring
from shmring._errors import SyncFailed
from shmring._journal import Journal


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def failing_fs(tmp_path: Path) -> Iterator[str]:
    back, mnt = tmp_path / "back", tmp_path / "mnt"
    back.mkdir()
    mnt.mkdir()
    disk = str(back / "disk")
    _run("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(back))
    loop = ""
    mounted = False
    try:
        with open(disk, "wb") as f:
            f.truncate(64 << 20)  # sparse: 64 MiB of disk on 6 MiB of memory
        _run("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0",
             "-O", "^has_journal", disk)
        loop = _run("losetup", "-f", "--show", disk)
        _run("mount", loop, str(mnt))
        mounted = True
        yield str(mnt)
    finally:
        if mounted:
            _run("umount", str(mnt))
        if loop:
            _run("losetup", "-d", loop)
        _run("umount", str(back))


def test_a_failed_flush_is_fatal_and_raised_again(failing_fs: str) -> None:
    j = Journal.create(os.path.join(failing_fs, "j"), segment_size=32 << 20)
    w = j.writer()
    for _ in range(20000):  # 20 MB of pages the disk cannot take
        w.append(os.urandom(1000))
    with pytest.raises(SyncFailed) as e:
        w.flush()
    assert isinstance(e.value, shmring.Broken) and isinstance(e.value, OSError)
    assert isinstance(e.value.__cause__, OSError)
    assert "msync" in str(e.value) and j.durable_seq == 0
    for call in (lambda: w.append(b"x"), w.flush, lambda: w.claim(1).__enter__()):
        with pytest.raises(SyncFailed):
            call()
    with pytest.raises(SyncFailed):
        j.close()  # close flushes, meets the same error, and still lets go


def test_the_interval_flusher_error_reaches_the_next_append(failing_fs: str) -> None:
    j = Journal.create(os.path.join(failing_fs, "j"), segment_size=32 << 20,
                       sync="interval:5ms")
    w = j.writer()
    deadline = time.monotonic() + 30
    with pytest.raises(SyncFailed):
        while time.monotonic() < deadline:  # the flusher fails; an append then raises
            w.append(os.urandom(1000))
    assert j.durable_seq < w.next_seq
    with pytest.raises(SyncFailed):
        j.close()
