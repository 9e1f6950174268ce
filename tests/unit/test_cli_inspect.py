"""What ``shmring inspect``, ``ls`` and ``gc`` tell a person: times they read
(a local date and an age, a process start as a time of day), totals labelled
for what they are, a non-zero status for a region that cannot be used, an
overwritten header told apart from a creation that died, and a ``gc`` hint
that can be pasted as it is. ``--json`` keeps the raw numbers."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Iterator

import pytest
from supervisor_util import Env, supervisor_env, wait_for

import shmring
from shmring import _core
from shmring import _layout as L
from shmring._cli.main import main
from shmring._region import inventory as _gc


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        monkeypatch.setenv("SHMRING_SUPERVISOR", "0")
        yield e


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_inspect_shows_readable_times_and_labels_closed_totals(
        env: Env, uname: str, capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="spsc")
    try:
        tx, rx = ch.producer(), ch.consumer()
        for _ in range(3):
            tx.send(b"x" * 10)
        rx.recv()
        tx.close()  # its totals fold into the header's stats_in_*
        code, out = run(capsys, "inspect", uname, "-n", env.namespace)
        assert code == 0
        created = ch.region.created_ns
        assert str(created) not in out
        day = time.strftime("%Y-%m-%d", time.localtime(created / 1e9))
        (line,) = [x for x in out.splitlines() if x.startswith("created:")]
        assert day in line and " ago)" in line
        assert "messages in/out:" in out
        assert "stats_in_msgs" not in out and "stats_out_msgs" not in out
        (closed,) = [x for x in out.splitlines() if "of which closed" in x]
        assert "3 / 0 messages" in closed and "gone" in closed
        data = json.loads(run(capsys, "inspect", uname, "-n", env.namespace, "--json")[1])
        assert data["created_ns"] == created  # raw numbers stay in --json
        assert data["counters"]["stats_in_msgs"] == 3
        (mine,) = [s for s in data["slots"] if s["role"] == "consumer"]
        ticks = str(mine["start_time"])
        row = next(x for x in out.splitlines() if "consumer" in x and str(os.getpid()) in x)
        started = row.split()[2]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", started) or re.fullmatch(
            r"\d{4}-\d\d-\d\d", started), row
        assert ticks not in row.split()
    finally:
        ch.close()
        ch.unlink()


def test_inspect_exits_1_on_a_corrupt_region(env: Env, uname: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    buf = ch.region.buf
    assert buf is not None
    total = struct.unpack_from("<Q", buf, L.HDR_TOTAL_SIZE)[0]
    try:
        struct.pack_into("<Q", buf, L.HDR_TOTAL_SIZE, total + 4096)
        code, out = run(capsys, "inspect", uname, "-n", env.namespace)
        assert code == 1
        assert "corrupt" in out and "gc --yes" in out
    finally:
        struct.pack_into("<Q", buf, L.HDR_TOTAL_SIZE, total)
        ch.close()
        ch.unlink()


def _age_past_grace(env: Env, name: str) -> None:
    wait_for(lambda: _gc.snapshot(env.namespace, name).age > _gc.CREATION_GRACE + 0.1,
             _gc.CREATION_GRACE + 10, "the region to be older than the creation grace")


def test_overwritten_magic_under_a_live_creator_is_corrupt_not_a_dead_creation(
        env: Env, uname: str, capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    buf = ch.region.buf
    assert buf is not None
    try:
        _core.store(buf, L.HDR_MAGIC, 0)  # the header overwritten; its creator (us) lives
        _age_past_grace(env, uname)
        code, out = run(capsys, "inspect", uname, "-n", env.namespace)
        assert code == 1
        assert "state: corrupt" in out and f"pid {os.getpid()}, is alive" in out
        assert "died" not in out
        code, out = run(capsys, "ls", "-n", env.namespace)
        assert "(corrupt)" in out and "(unpublished)" not in out
        code, out = run(capsys, "gc", "-n", env.namespace)
        assert uname in out and "corrupt" in out and "orphan" not in out
        # The same header under a creator that is gone: a creation that died.
        struct.pack_into("<Q", buf, L.HDR_CREATOR_PID, 4_000_000)
        code, out = run(capsys, "inspect", uname, "-n", env.namespace)
        assert code == 1
        assert "state: unpublished" in out and "died while creating it" in out
    finally:
        struct.pack_into("<Q", buf, L.HDR_CREATOR_PID, os.getpid())
        _core.store(buf, L.HDR_MAGIC, L.SHMRING_MAGIC)
        ch.close()
        ch.unlink()


def test_gc_hint_repeats_the_namespace_and_options(env: Env, uname: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ch = shmring.Channel.create(uname, capacity=4096)
    buf = ch.region.buf
    assert buf is not None
    _core.store(buf, L.slot_offset(ch._slot) + L.SLOT_PID, 4_000_000)  # its process "died"
    try:
        code, out = run(capsys, "gc", "-n", env.namespace)
        assert code == 0 and "orphan" in out
        assert f"run `shmring gc --yes -n {env.namespace}` to remove them" in out
        code, out = run(capsys, "gc", "--namespace", env.namespace, "--persistent")
        assert f"run `shmring gc --yes -n {env.namespace} --persistent`" in out
        assert os.path.exists(env.shm(uname))  # listing removes nothing
    finally:
        _core.store(buf, L.slot_offset(ch._slot) + L.SLOT_PID, os.getpid())
        ch.close()
        ch.unlink()
