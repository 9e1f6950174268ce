"""A segment truncated under the processes that map it (any process of its
owner can ``truncate -s 100 /dev/shm/shmring.<ns>.<name>``): nobody dies
of SIGBUS.

- A client's send, blocked recv and blocked send end in ``Broken`` (the
  blocked ones within about a second, the sleep slice), in a forked child
  whose exit status shows a SIGBUS if one got through;
- the supervisor survives the truncation of a region it tracks, and unlinks
  it by the usual rule once its users are gone;
- ``shmring ls`` and ``inspect`` report a truncated region as corrupt;
- ``Region.check_intact`` and ``truncated`` see the shrink without touching
  the mapping;
- a SIGBUS outside shmring's mappings still kills the process, as it would
  without the guard (the handler chains to the one before it).

Each truncation is real: ``os.truncate`` on the segment's file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from supervisor_util import Child, Env, wait_for

import shmring
from shmring._region.names import default_namespace

Make = Callable[..., shmring.Channel]


def _shm(ch: shmring.Channel) -> str:
    return "/dev/shm/" + ch.region.segment.lstrip("/")


def _in_child(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child; fail with its exit status unless 0
    (-7 is a SIGBUS that got through)."""
    c = Child(lambda _c: fn())
    status = c.wait(30)
    assert status == 0, f"the child exited with {status} (-{int(signal.SIGBUS)}: SIGBUS)"


def test_send_after_truncation_raises_broken(make_channel: Make) -> None:
    ch = make_channel(capacity=1 << 16)

    def child() -> None:
        tx = ch.producer()
        tx.send(b"before")
        os.truncate(_shm(ch), 100)
        with pytest.raises(shmring.Broken, match="truncated under it") as info:
            for _ in range(200):  # the ring's pages past 100 bytes are gone
                tx.send(b"x" * 1000, timeout=1)
        assert info.value.channel == ch.name
        with pytest.raises(shmring.Broken):  # and it stays broken
            tx.send_nowait(b"y")

    _in_child(child)


@pytest.mark.parametrize("side", ["recv", "send"])
def test_a_blocked_call_ends_broken(make_channel: Make, side: str) -> None:
    ch = make_channel(capacity=1 << 16)

    def child() -> None:
        tx, rx = ch.producer(), ch.consumer()
        if side == "send":
            while True:
                try:
                    tx.send_nowait(b"z" * 4000)
                except shmring.WouldBlock:
                    break
        got: list[BaseException] = []

        def blocked() -> None:
            try:
                if side == "recv":
                    rx.recv()  # no timeout: would sleep for ever on a dead futex word
                else:
                    tx.send(b"z" * 4000)
            except BaseException as e:
                got.append(e)

        th = threading.Thread(target=blocked, daemon=True)
        th.start()
        time.sleep(0.2)  # asleep on the futex by now
        t0 = time.monotonic()
        os.truncate(_shm(ch), 100)
        th.join(10)
        assert not th.is_alive(), "the blocked call did not end"
        assert len(got) == 1 and isinstance(got[0], shmring.Broken), got
        assert time.monotonic() - t0 < 5.0

    _in_child(child)


@pytest.mark.parametrize("pattern", ["spsc", "mpmc"])  # mpmc: the claim watch looks too
def test_supervisor_survives_and_unlinks_it(env: Env, uname: str, pattern: str) -> None:
    path = env.shm(uname)

    def client(c: Child) -> None:
        ch = shmring.Channel.create(uname, capacity=1 << 16, pattern=pattern)
        ch.producer().send(b"hello")
        c.signal()
        c.wait_go()
        os.truncate(path, 100)
        c.signal()
        c.wait_go()  # then exits without closing: the supervisor cleans up

    c = Child(client)
    c.ready()
    pid = env.supervisor_pid()
    assert pid is not None
    c.go()
    c.ready()
    assert os.path.getsize(path) == 100
    time.sleep(1.5)  # a claim watch round (every second) over the shrunk region
    c.go()
    assert c.wait() == 0
    wait_for(lambda: not os.path.exists(path), 10, "the truncated region to be unlinked")
    os.kill(pid, 0)  # the same supervisor still runs
    assert env.supervisor_pid() == pid
    with open(os.path.join(env.socket_dir, f"{env.namespace}.log")) as f:
        assert "was truncated to 100 bytes" in f.read()  # said once, then not read again


def test_a_truncated_channel_can_still_be_unlinked(uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1 << 16, supervised=False)
    path = _shm(ch)
    try:
        os.truncate(path, 100)  # its header's creation time is gone with it
        ch.unlink()
        assert not os.path.exists(path)
    finally:
        ch.close()
        if os.path.exists(path):
            os.unlink(path)


def test_region_sees_the_shrink_without_touching_it(make_channel: Make) -> None:
    ch = make_channel(capacity=1 << 16)
    region = ch.region
    assert region.truncated() is None
    region.check_intact()
    os.truncate(_shm(ch), 8192)
    assert region.truncated() == 8192
    with pytest.raises(shmring.CorruptRegion, match="truncated to 8192 bytes"):
        region.check_intact()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shmring", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_reports_a_truncated_region(make_channel: Make) -> None:
    ch = make_channel(capacity=1 << 16)
    ns = ch.region.segment.split(".")[1]
    os.truncate(_shm(ch), 8192)
    ls = _cli("ls", "-n", ns)
    assert ls.returncode == 0 and "Traceback" not in ls.stderr
    row = next(line for line in ls.stdout.splitlines() if ch.name in line)
    assert "corrupt" in row
    ins = _cli("inspect", "-n", ns, ch.name)
    assert ins.returncode != 0 and "Traceback" not in ins.stderr, ins
    assert "8192" in ins.stdout + ins.stderr


# A script run in a fresh interpreter: faulthandler enabled before shmring is
# imported, after it, or not at all; then a fault in a file mapping that is
# not shmring's ("foreign"), or in a channel whose segment was truncated.
_SCRIPT = """
import faulthandler, mmap, os, sys
order, where = sys.argv[1], sys.argv[2]
if order == "before":
    faulthandler.enable()
import shmring
if order == "after":
    faulthandler.enable()
ch = shmring.Channel.create("trunc-%d" % os.getpid(), capacity=1 << 16, supervised=False)
try:
    if where == "foreign":
        ch.unlink()  # mapped still (the guard watches it), but nothing to leave if we die
        path = os.path.join(sys.argv[3], "file")
        with open(path, "wb") as f:
            f.truncate(1 << 16)
        fd = os.open(path, os.O_RDWR)
        m = mmap.mmap(fd, 1 << 16)
        os.ftruncate(fd, 0)
        m[(1 << 16) - 1]
        print("survived a foreign SIGBUS")
    else:
        tx = ch.producer()
        os.truncate("/dev/shm/" + ch.region.segment.lstrip("/"), 100)
        try:
            for _ in range(200):
                tx.send(b"x" * 1000, timeout=1)
        except shmring.Broken:
            print("Broken")
finally:
    ch.unlink()  # while mapped: by inode, the truncated header cannot say who made it
    ch.close()
"""


@pytest.mark.parametrize("order", ["none", "before", "after"])
def test_a_sigbus_elsewhere_still_kills(tmp_path: object, order: str) -> None:
    r = subprocess.run([sys.executable, "-c", _SCRIPT, order, "foreign", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGBUS, r
    assert "survived" not in r.stdout
    if order != "none":
        assert "Bus error" in r.stderr  # faulthandler still saw it and dumped


@pytest.mark.parametrize("order", ["none", "before", "after"])
def test_own_fault_is_caught_whoever_else_handles_sigbus(order: str) -> None:
    r = subprocess.run([sys.executable, "-c", _SCRIPT, order, "own"], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "Broken"), r
    assert "Bus error" not in r.stderr


def test_a_put_blocked_on_a_full_queue_ends_broken(make_queue: Callable[..., shmring.Queue],
                                                    ) -> None:
    q = make_queue(maxsize=1)
    ctl = f"/dev/shm/shmring.{default_namespace()}.{q.name}.ctl"

    def child() -> None:
        q.put(1)
        got: list[BaseException] = []

        def blocked() -> None:
            try:
                q.put(2)  # full: sleeps on the queue's not-full futex word
            except BaseException as e:
                got.append(e)

        th = threading.Thread(target=blocked, daemon=True)
        th.start()
        time.sleep(0.2)
        os.truncate(ctl, 100)
        th.join(10)
        assert not th.is_alive(), "the blocked put did not end"
        assert len(got) == 1 and isinstance(got[0], shmring.Broken), got
        assert "control segment was truncated" in str(got[0])

    _in_child(child)
