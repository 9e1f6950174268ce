"""Creating a ``shmring.Queue`` (issue 13: "created in well under a
millisecond"): its two regions are announced in one ``creating`` message
and registered in one ``attach_all`` round trip, and both are tracked by the
supervisor when ``Queue()`` returns; the maker of an unnamed growing queue
starts its ring watcher only once another process can reach the queue (a
fork, its pickling, its name read, its first put or get), and a ring another
process grows is still held by the maker whatever way it was reached, the
grower SIGKILLed right after its puts included. Old-style ``creating`` (one
``seg``) and ``attach`` requests still work: a client and a supervisor of
this version ship together, and the single-region calls use them."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import posix_ipc
import pytest
from queue_util import segments, wait_gone
from supervisor_util import Child, Env, FakeClock, sleep_forever, wait_for

import shmring
from shmring import _layout as L
from shmring._channel.channel import Channel
from shmring._supervisor import client as _client
from shmring._supervisor.deaths import Proc
from shmring._supervisor.server import Supervisor

WAIT = 30.0
N, SIZE = 40, 10_000  # 400 kB: the unnamed queue grows to rings 1, 2 and 3


def _watching(q: Any) -> bool:
    """Whether this process's watcher of ``q`` runs (by its thread's name;
    ``q._name``, since reading ``q.name`` starts it)."""
    return any(t.name == f"shmring-queue-{q._name}" for t in threading.enumerate())


def _me(s: Supervisor) -> Proc:
    return next(p for p in s.procs if p.pid == os.getpid())


def _close(q: Any) -> None:
    paths = segments(q)
    q.close()
    assert wait_gone(paths), f"{q!r} outlived its last holder"


def _get_all(q: Any) -> None:
    for i in range(N):
        assert q.get(timeout=WAIT) == (i, bytes([i]) * SIZE)


def _put_all_then_die(q: Any) -> None:
    for i in range(N):
        q.put((i, bytes([i]) * SIZE))
    os.kill(os.getpid(), signal.SIGKILL)  # at once after the last put returned


# ------------------------------------------------------------- protocol --
def test_attach_all_registers_every_region_in_one_reply(env: Env, sup: Supervisor,
                                                        uname: str) -> None:
    chans = [Channel.create(f"{uname}-{i}", 1024, supervised=False) for i in range(3)]
    conn = env.connection()
    try:
        regions = [(c.region.segment, c.region.created_ns) for c in chans]
        missing = (f"/shmring.{env.namespace}.{uname}-none", 1)
        assert conn.attach_all(regions[:2]) == [None, None]
        # One request, one reply with a result per region.
        reply = conn._request({"op": "attach_all", "regions": [list(regions[2]), list(missing)]})
        assert reply["ok"] is False and reply["results"] == ["ok", "gone"]
        assert sup.call(lambda: [sup.regions.get(r) is not None for r in regions]) == [True] * 3
        assert sup.call(lambda: _me(sup).holds) == {r: 1 for r in regions}
        # Per region: None, or the error attach() raises.
        errs = conn.attach_all([regions[0], missing])
        assert errs[0] is None and isinstance(errs[1], _client.Stale)
        assert conn.holds[regions[0]] == 2 and missing not in conn.holds
        conn.holds[regions[2]] = 1  # the raw request above: ours to detach
        for r in (regions[0], *regions):
            conn.detach(*r)
        assert sup.call(lambda: _me(sup).holds) == {}
    finally:
        for c in chans:
            c.close()
            c.unlink()


def test_old_style_creating_and_attach_still_work(env: Env, sup: Supervisor,
                                                  uname: str) -> None:
    ch = Channel.create(uname, 1024, supervised=False)
    conn = env.connection()
    try:
        seg = ch.region.segment
        assert conn._request({"op": "creating", "seg": seg})["ok"]
        assert sup.call(lambda: seg in _me(sup).creating)
        reply = conn._request({"op": "attach", "seg": seg, "created_ns": ch.region.created_ns})
        assert reply["ok"] and sup.call(lambda: seg not in _me(sup).creating)
        assert sup.call(lambda: _me(sup).holds) == {(seg, ch.region.created_ns): 1}
        conn.holds[(seg, ch.region.created_ns)] = 1
        conn.detach(seg, ch.region.created_ns)
        assert sup.call(lambda: _me(sup).holds) == {}
    finally:
        ch.close()
        ch.unlink()


def test_a_creator_killed_after_announcing_two_regions_leaves_neither(env: Env,
                                                                     uname: str) -> None:
    clock = FakeClock()
    segs = [f"/shmring.{env.namespace}.{uname}", f"/shmring.{env.namespace}.{uname}.ctl"]
    with Supervisor(env.namespace, socket_dir=env.socket_dir, clock=clock,
                    startup_grace=0.0, creation_grace=0.2) as s:
        def child(c: Child) -> None:
            env.connection().creating(*segs)  # one message for both
            for seg in segs:
                posix_ipc.SharedMemory(seg, posix_ipc.O_CREX, mode=0o600, size=8192)
            c.signal()
            sleep_forever()

        c = Child(child)
        c.ready()
        c.kill()
        wait_for(lambda: s.call(lambda: s.stats["deaths"]) == 1, 5, "the death")
        time.sleep(0.25)  # the segments' age is real time
        clock.advance(1.0)
        s.wake()
        wait_for(lambda: not any(os.path.exists(f"/dev/shm/{g[1:]}") for g in segs), 5,
                 "both half-made segments removed")


# -------------------------------------------------------------- creation --
@pytest.mark.parametrize("bounded", [False, True])
def test_both_regions_are_tracked_when_queue_returns(env: Env, sup: Supervisor,
                                                     bounded: bool) -> None:
    q: Any = shmring.Queue(maxsize_bytes=4096 if bounded else None)
    try:
        h = q._h
        keys = [(c.region.segment, c.region.created_ns) for c in (h.ch, h.ctl)]
        # Asked at once, in the supervisor's own thread: no waiting here.
        assert sup.call(lambda: [sup.regions.get(k) is not None for k in keys]) == [True, True]
        assert sup.call(lambda: _me(sup).holds) == {k: 1 for k in keys}
        assert sup.call(lambda: _me(sup).creating) == {}
        assert h.ch.region.slot_count == h.ctl.region.slot_count == L.MAX_SLOTS
        q.put("x")
        assert q.get(timeout=WAIT) == "x"
    finally:
        _close(q)


def test_a_queue_that_cannot_be_made_leaves_nothing(env: Env, sup: Supervisor,
                                                    uname: str) -> None:
    blocker = Channel.create(f"{uname}.ctl", 1024)  # the control block's name, taken
    try:
        with pytest.raises(shmring.RegionExists):
            shmring.Queue(name=uname)
        assert not os.path.exists(f"/dev/shm/shmring.{env.namespace}.{uname}")
        assert sup.call(lambda: _me(sup).creating) == {}  # both announcements withdrawn
        assert sup.call(lambda: len(_me(sup).holds)) == 1  # the blocker's only
    finally:
        blocker.close()


# ---------------------------------------------------------- the watcher --
@pytest.mark.parametrize("way", ["pickle", "name", "put", "get", "fork"])
def test_the_maker_starts_its_watcher_once_the_queue_can_be_reached(way: str) -> None:
    q: Any = shmring.Queue()
    try:
        assert not _watching(q)
        if way == "pickle":
            pickle.dumps(q)
        elif way == "name":
            assert q.name.startswith(f"q-{os.getpid()}-")
        elif way == "put":
            q.put(1)
        elif way == "get":
            with pytest.raises(queue.Empty):
                q.get_nowait()
        else:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        assert _watching(q)
    finally:
        _close(q)


def test_a_named_or_opened_queue_is_watched_at_once(uname: str) -> None:
    q: Any = shmring.Queue(name=uname)  # others may know this name already
    try:
        assert _watching(q)
        other: Any = shmring.Queue.open(uname)
        try:
            assert _watching(other)  # one thread per queue object
            assert sum(t.name == f"shmring-queue-{uname}" for t in threading.enumerate()) == 2
        finally:
            other.close()
    finally:
        _close(q)


def test_a_bounded_queue_has_no_watcher() -> None:
    q: Any = shmring.Queue(maxsize_bytes=4096)
    try:
        pickle.dumps(q)
        q.put(1)
        assert q.get(timeout=WAIT) == 1 and not _watching(q)
    finally:
        _close(q)


def test_rings_a_forked_child_grew_outlive_its_sigkill() -> None:
    """Forked before the maker used the queue at all: the fork started the
    maker's watcher, which holds every ring the child adds."""
    q: Any = shmring.Queue()
    try:
        def child(c: Child) -> None:
            for i in range(N):
                q.put((i, bytes([i]) * SIZE))
            c.signal()  # every put returned
            sleep_forever()

        c = Child(child)
        assert _watching(q)
        c.ready(WAIT)
        c.kill()
        assert len(segments(q)) > 3  # it grew
        _get_all(q)
    finally:
        _close(q)


def test_rings_a_spawned_child_grew_outlive_its_sigkill() -> None:
    q: Any = shmring.Queue()
    try:
        p = mp.get_context("spawn").Process(target=_put_all_then_die, args=(q,))
        p.start()  # pickles q: its watcher starts here
        assert _watching(q)
        p.join(WAIT)
        assert p.exitcode == -signal.SIGKILL
        _get_all(q)
    finally:
        _close(q)


_OPEN_AND_PUT = """
import os, signal, sys
import shmring
q = shmring.Queue.open(sys.argv[1])
for i in range(int(sys.argv[2])):
    q.put((i, bytes([i]) * int(sys.argv[3])))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rings_a_process_that_opened_it_by_name_grew_outlive_its_sigkill() -> None:
    """Neither forked nor pickled: another program opens it by the name it
    was told (exec'd, so no fork hook of ours runs in between)."""
    q: Any = shmring.Queue()
    try:
        r = subprocess.run([sys.executable, "-c", _OPEN_AND_PUT, q.name, str(N), str(SIZE)],
                           timeout=WAIT, env=dict(os.environ), check=False)
        assert r.returncode == -signal.SIGKILL
        _get_all(q)
    finally:
        _close(q)
