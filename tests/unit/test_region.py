"""Regions and channels as named things: bad arguments, names that exist or
do not, segments that are not regions, a full /dev/shm, another user, pickling
across processes, and the attach table."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import posix_ipc
import pytest

import shmring
from shmring import _layout as L
from shmring._proc import start_time
from shmring._region.names import default_namespace

WAIT = 10.0
NS = default_namespace()  # conftest gives each test process its own


def seg_name(name: str, namespace: str = NS) -> str:
    return f"/shmring.{namespace}.{name}"


def in_dev_shm(name: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if e.endswith("." + name)]


@pytest.fixture
def created(uname: str, make_channel: Callable[..., shmring.Channel]
            ) -> Callable[..., shmring.Channel]:
    """Channels in namespace NS, named ``uname`` unless told otherwise."""

    def _create(name: str = uname, **kw: Any) -> shmring.Channel:
        return make_channel(name=name, namespace=NS, **kw)

    return _create


def wait_child(pid: int, timeout: float = WAIT) -> int:
    """Exit status of a forked child, killing it if it outlives the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


# ------------------------------------------------------- bad arguments --


@pytest.mark.parametrize("name", [
    "", "/", "/abs", ".hidden", "-dash", "a/b", "sp ace", "tab\t", "x" * 201, "nul\0",
    "ünï", None, b"bytes", 5,
], ids=repr)
def test_bad_names(name: Any) -> None:
    for call in (
        lambda: shmring.Channel.create(name, capacity=4096),
        lambda: shmring.Channel.open(name, timeout=0.2),
        lambda: shmring.Region.create(name, 4096),
        lambda: shmring.Region.attach(name, timeout=0.2),
    ):
        with pytest.raises(shmring.InvalidArgument) as ei:
            call()
        assert isinstance(ei.value, ValueError)


def test_longest_name(created: Callable[..., shmring.Channel], uname: str) -> None:
    name = uname + "x" * (200 - len(uname))
    ch = created(name)
    assert ch.name == name
    with shmring.Channel.open(name, namespace=NS) as again:
        assert again.capacity == 4096


@pytest.mark.parametrize("namespace", ["", "a.b", "x" * 41, "sp ace", "a/b"])
def test_bad_namespaces(uname: str, namespace: str) -> None:
    with pytest.raises(shmring.InvalidArgument):
        shmring.Channel.create(uname, capacity=4096, namespace=namespace)
    assert in_dev_shm(uname) == []


@pytest.mark.parametrize("capacity", [
    0, -4096, 1000, 4095, 4097, 512, 1 << 41, 4096.0, "4096", None,
], ids=repr)
def test_bad_capacity(uname: str, capacity: Any) -> None:
    with pytest.raises(shmring.InvalidArgument):
        shmring.Channel.create(uname, capacity=capacity)
    with pytest.raises(shmring.InvalidArgument):
        shmring.Region.create(uname, capacity)
    assert in_dev_shm(uname) == []


def test_smallest_capacity(created: Callable[..., shmring.Channel]) -> None:
    ch = created(capacity=L.MIN_CAPACITY)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"m" * ch.max_message)
    assert rx.recv(timeout=WAIT) == b"m" * ch.max_message


@pytest.mark.parametrize("max_message", [0, -1, 4096 // 2 - L.RECORD_HEADER + 1, 4096, 1.5],
                         ids=repr)
def test_bad_max_message(uname: str, max_message: Any) -> None:
    with pytest.raises(shmring.InvalidArgument):
        shmring.Channel.create(uname, capacity=4096, max_message=max_message)
    assert in_dev_shm(uname) == []


@pytest.mark.parametrize("max_message", [1, 4096 // 2 - L.RECORD_HEADER])
def test_max_message_bounds(created: Callable[..., shmring.Channel], max_message: int) -> None:
    ch = created(max_message=max_message, pattern="mpmc")
    assert ch.max_message == max_message
    tx, rx = ch.producer(), ch.consumer()
    for _ in range(5):  # the largest fits wherever the ring has wrapped to
        tx.send(b"w" * max_message, timeout=WAIT)
        assert rx.recv(timeout=WAIT) == b"w" * max_message
    with pytest.raises(shmring.MessageTooLarge):
        tx.send(b"w" * (max_message + 1))


@pytest.mark.parametrize(("kw", "what"), [
    ({"pattern": "pubsub"}, "pattern"),
    ({"pattern": "SPSC"}, "pattern"),
    ({"pattern": ""}, "pattern"),
    ({"pattern": "spsc", "lossy": True}, "lossy"),
    ({"pattern": "mpmc", "lossy": True}, "lossy"),
    ({"slots": 0}, "slots"),
    ({"slots": L.MAX_SLOTS + 1}, "slots"),
], ids=lambda v: repr(v) if isinstance(v, dict) else v)
def test_bad_options(uname: str, kw: dict[str, Any], what: str) -> None:
    with pytest.raises(shmring.InvalidArgument, match=what):
        shmring.Channel.create(uname, capacity=4096, **kw)
    assert in_dev_shm(uname) == []


# ------------------------------------------------ exists / not found --


def test_create_twice(created: Callable[..., shmring.Channel], uname: str) -> None:
    ch = created(pattern="spsc")
    for pattern in ("spsc", "mpmc"):
        with pytest.raises(shmring.RegionExists) as ei:
            shmring.Channel.create(uname, capacity=8192, pattern=pattern, namespace=NS)
        assert isinstance(ei.value, FileExistsError)
    with pytest.raises(shmring.RegionExists):
        shmring.Region.create(uname, 4096, namespace=NS)
    # The first is untouched.
    assert (ch.capacity, ch.pattern) == (4096, "spsc")
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"still fine")
    assert rx.recv(timeout=WAIT) == b"still fine"


def test_open_missing(uname: str) -> None:
    with pytest.raises(shmring.RegionNotFound) as ei:
        shmring.Channel.open(uname, namespace=NS, timeout=0.2)
    assert isinstance(ei.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        shmring.Region.attach(uname, namespace=NS, timeout=0.2)


def test_open_after_unlink(created: Callable[..., shmring.Channel], uname: str) -> None:
    ch = created()
    tx, rx = ch.producer(), ch.consumer()
    ch.unlink()
    with pytest.raises(shmring.RegionNotFound):
        shmring.Channel.open(uname, namespace=NS, timeout=0.2)
    # Who has it mapped keeps using it; the name is free for a new channel.
    tx.send(b"after unlink")
    assert rx.recv(timeout=WAIT) == b"after unlink"
    with shmring.Channel.create(uname, capacity=8192, namespace=NS) as fresh:
        assert fresh.capacity == 8192
        fresh.unlink()


def test_namespaces_are_separate(created: Callable[..., shmring.Channel], uname: str) -> None:
    ch = created()
    with pytest.raises(shmring.RegionNotFound):
        shmring.Channel.open(uname, namespace="other-ns", timeout=0.2)
    with shmring.Channel.create(uname, capacity=8192, namespace="other-ns") as other:
        assert other.region.segment == seg_name(uname, "other-ns")
        assert ch.region.segment == seg_name(uname)
        other.unlink()


# -------------------------------------------------- not a region ------


def _garbage(n: int) -> bytes:
    out = bytearray()
    x = 0x12345678
    while len(out) < n:  # a fixed pseudo-random pattern
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


@pytest.mark.parametrize(("size", "fill"), [
    (0, b""),
    (100, b"\0" * 100),
    (8192, b"\0" * 8192),
    (8192, _garbage(8192)),
    (8192, b"SHMRING\x01" + _garbage(8184)),  # the magic, then nonsense
], ids=["empty", "tiny", "zeros", "garbage", "magic-then-garbage"])
def test_open_not_a_region(uname: str, size: int, fill: bytes) -> None:
    shm = posix_ipc.SharedMemory(seg_name(uname), posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        if fill:
            os.pwrite(shm.fd, fill, 0)
        shm.close_fd()
        t0 = time.monotonic()
        with pytest.raises(shmring.CorruptRegion) as ei:
            shmring.Channel.open(uname, namespace=NS, timeout=0.2)
        assert isinstance(ei.value, shmring.Broken)
        with pytest.raises(shmring.CorruptRegion):
            shmring.Region.attach(uname, namespace=NS, timeout=0.2)
        assert time.monotonic() - t0 < 5, "the attach timeout was not honoured"
        # Not ours to remove: it is still there.
        assert in_dev_shm(uname)
    finally:
        posix_ipc.unlink_shared_memory(seg_name(uname))



CORRUPTIONS: dict[str, tuple[str, int, int]] = {
    # field: (struct format, offset, bad value)
    "version": ("<I", L.HDR_VERSION, L.LAYOUT_VERSION + 1),
    "pattern": ("<I", L.HDR_PATTERN, 9),
    "total_size": ("<Q", L.HDR_TOTAL_SIZE, 1 << 40),
    "capacity-not-pow2": ("<Q", L.HDR_CAPACITY, 3000),
    "capacity-too-big": ("<Q", L.HDR_CAPACITY, 1 << 20),
    "max_message": ("<Q", L.HDR_MAX_MESSAGE, 1 << 62),
    "max_message-zero": ("<Q", L.HDR_MAX_MESSAGE, 0),
    "slot_count-zero": ("<I", L.HDR_SLOT_COUNT, 0),
    "slot_count-huge": ("<I", L.HDR_SLOT_COUNT, 100_000),
    "data_offset": ("<Q", L.HDR_DATA_OFFSET, 16),
    "data_offset-past-end": ("<Q", L.HDR_DATA_OFFSET, 1 << 50),
}


@pytest.mark.parametrize("field", list(CORRUPTIONS))
def test_open_corrupt_header(created: Callable[..., shmring.Channel], uname: str,
                             field: str) -> None:
    ch = created()
    fmt, off, value = CORRUPTIONS[field]
    buf = ch.region.buf
    assert buf is not None
    struct.pack_into(fmt, buf, off, value)
    with pytest.raises(shmring.CorruptRegion):
        shmring.Channel.open(uname, namespace=NS, timeout=0.2)


# ---------------------------------------------------------- no space --


NOSPACE_SNIPPET = textwrap.dedent("""
    import os, shmring
    assert os.listdir("/dev/shm") == [], "not a fresh tmpfs"
    for capacity in (4 << 20, 1 << 20):
        try:
            shmring.Channel.create("nospace", capacity=capacity)
        except shmring.NoSpace as e:
            assert isinstance(e, OSError), type(e).__mro__
        else:
            raise SystemExit(f"a {capacity}-byte channel was created in a 1 MiB /dev/shm")
        assert os.listdir("/dev/shm") == [], os.listdir("/dev/shm")
    ch = shmring.Channel.create("fits", capacity=64 << 10)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"x" * 1000)
    assert rx.recv(timeout=5) == b"x" * 1000
    ch.close()
    ch.unlink()
    assert os.listdir("/dev/shm") == [], os.listdir("/dev/shm")
    print("nospace ok")
""")


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_no_space() -> None:
    """A /dev/shm too small for the region: NoSpace at creation, nothing left
    behind. Simulated with a 1 MiB tmpfs over /dev/shm in a private mount
    namespace, so the real /dev/shm is not touched."""
    if not _can_unshare():
        pytest.skip("needs root and `unshare --mount` to mount a small tmpfs on /dev/shm")
    script = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" -c "$1"'
    env = dict(os.environ, SHMRING_SUPERVISOR="0")  # no supervisor inside the namespace
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
         sys.executable, NOSPACE_SNIPPET],
        capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nospace ok"


# ------------------------------------------------------- another user --


def test_another_user_cannot_attach(created: Callable[..., shmring.Channel],
                                    uname: str) -> None:
    created(mode=0o600)
    st = os.stat("/dev/shm/" + seg_name(uname).lstrip("/"))
    assert st.st_mode & 0o777 == 0o600
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then try
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                shmring.Channel.open(uname, namespace=NS, timeout=0.2, supervised=False)
            except shmring.PermissionDenied as e:
                code = 0 if isinstance(e, PermissionError) else 2
            except BaseException:
                code = 3
            else:
                code = 4
        finally:
            os._exit(code)
    status = wait_child(pid)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0, {
        2: "PermissionDenied is not a PermissionError", 3: "another error",
        4: "another user attached"}.get(os.WEXITSTATUS(status), "setuid failed")


# ----------------------------------------------------------- pickling --


def pickled_child(ch: shmring.Channel, segment: str, out: Queue[Any]) -> None:
    try:
        assert ch.region.segment == segment, ch.region.segment
        tx = ch.producer()
        tx.send(b"from the spawned child")
        out.put(("ok", os.getpid()))
    except BaseException as e:
        out.put(("error", repr(e)))
    finally:
        ch.close()


def test_pickle_in_process(created: Callable[..., shmring.Channel]) -> None:
    ch = created(pattern="mpsc")
    again = pickle.loads(pickle.dumps(ch))
    try:
        assert again is not ch
        assert (again.name, again.pattern, again.region.segment) == (
            ch.name, ch.pattern, ch.region.segment)
        rx = ch.consumer()
        again.producer().send(b"via the copy")
        assert rx.recv(timeout=WAIT) == b"via the copy"
    finally:
        again.close()


def test_pickle_to_a_spawned_child(uname: str) -> None:
    # A namespace other than the default: the pickle must carry it.
    ns = "pickled"
    ch = shmring.Channel.create(uname, capacity=4096, pattern="spsc", namespace=ns)
    ctx = mp.get_context("spawn")
    child = None
    try:
        rx = ch.consumer()
        out: Queue[Any] = ctx.Queue()
        child = ctx.Process(target=pickled_child, args=(ch, ch.region.segment, out))
        child.start()
        status, detail = out.get(timeout=60)
        assert status == "ok", detail
        assert rx.recv(timeout=WAIT) == b"from the spawned child"
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child is not None and child.is_alive():
            child.kill()
            child.join(5)
        ch.close()
        ch.unlink()


# -------------------------------------------------------- attach table --


def attach_and_wait(name: str, ready: Event, go: Event | None) -> None:
    ch = shmring.Channel.open(name, namespace=NS, supervised=False)
    rx = ch.consumer()
    ready.set()
    if go is None:
        time.sleep(60)  # to be killed (not inside an Event: a killed waiter breaks it)
        return
    go.wait(WAIT)
    rx.close()
    ch.close()


def test_attach_table(created: Callable[..., shmring.Channel], uname: str) -> None:
    # Unsupervised: a supervisor would free a killed process's slots itself.
    ch = created(pattern="mpmc", slots=8, supervised=False)
    me = os.getpid()
    tx, rx = ch.producer(), ch.consumer()
    tx.send_many([b"a", b"bb", b"ccc"])
    assert rx.recv_many(3, timeout=WAIT) == [b"a", b"bb", b"ccc"]
    slots = ch.region.slots()
    # The channel's own slot is lent to its first endpoint (the producer).
    assert sorted(s.role for s in slots) == ["consumer", "producer"]
    assert {s.pid for s in slots} == {me}
    assert {s.start_time for s in slots} == {start_time(me)}
    by_role = {s.role: s for s in slots}
    assert (by_role["producer"].messages, by_role["producer"].bytes) == (3, 6)
    assert (by_role["consumer"].messages, by_role["consumer"].bytes) == (3, 6)

    ctx = mp.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=attach_and_wait, args=(uname, ready, go), daemon=True)
    child.start()
    try:
        assert ready.wait(WAIT)
        theirs = [s for s in ch.region.slots() if s.pid == child.pid]
        assert [s.role for s in theirs] == ["consumer"]  # its channel's slot, lent
        assert ch.region.live_pids() == {me, child.pid}
        go.set()
        child.join(WAIT)
        assert child.exitcode == 0
        # A clean exit gives its slots back.
        assert {s.pid for s in ch.region.slots()} == {me}

        # A killed process leaves its slots until recovery frees them.
        ready = ctx.Event()
        child = ctx.Process(target=attach_and_wait, args=(uname, ready, None), daemon=True)
        child.start()
        assert ready.wait(WAIT)
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(WAIT)
        assert [s.role for s in ch.region.slots() if s.pid == child.pid] == ["consumer"]
        assert ch.region.live_pids() == {me}
        assert {pid for _, pid in ch.region.dead_slots()} == {child.pid}
        ch.recover_dead()
        assert {s.pid for s in ch.region.slots()} == {me}
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)


def test_attach_table_full(created: Callable[..., shmring.Channel]) -> None:
    ch = created(pattern="mpmc", slots=3)
    # The channel's own slot (lent to the producer) and two more fill the table.
    endpoints: list[shmring.Producer | shmring.Consumer] = [
        ch.producer(), ch.consumer(), ch.consumer()]
    with pytest.raises(shmring.AttachTableFull):
        ch.consumer()
    endpoints.pop().close()
    endpoints.append(ch.consumer())
