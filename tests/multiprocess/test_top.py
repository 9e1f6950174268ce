"""``shmring top`` against real traffic, in a real terminal.

One scene for the module: a process that creates an spsc channel and a
broadcast one, forks a producer and a consumer for the first, a producer and
two consumers (one slow) for the second, and runs a two-stage pipeline whose
source never ends until the scene is stopped. ``shmring top`` then runs in
tmux (a terminal of 160x50 on a private tmux server), is read with
``capture-pane`` and driven with ``send-keys``; ``--once`` and ``--json`` are
run as plain subprocesses and parsed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shmring._region import inventory
from shmring._region.names import list_segments

#: The scene: ``python -c SCENE <stop file> <feed> <ticks> <pipeline>``.
SCENE = r'''
import multiprocessing as mp, os, sys, time
import shmring

stop, feed, ticks, pipe = sys.argv[1:5]

def produce(name, batch, pause):
    ch = shmring.Channel.open(name)
    tx = ch.producer()
    while not os.path.exists(stop):
        tx.send_many([b"m" * 40] * batch, timeout=10)
        time.sleep(pause)
    ch.close_send()
    ch.close()

def consume(name, pause):
    ch = shmring.Channel.open(name)
    rx = ch.consumer()
    try:
        while True:
            rx.recv_many(50, timeout=30)
            time.sleep(pause)
    except shmring.EndOfStream:
        pass
    ch.close()

def inc(x):
    if x == 50:
        raise ValueError("poison")  # one dead letter
    time.sleep(0.001)
    return x + 1

def even(x):
    return x % 2 == 0

def source():
    for i in range(10**9):
        if os.path.exists(stop):
            return
        yield i

def pipeline():
    p = shmring.Pipeline(pipe)
    p.source(source()).map(inc, workers=2, max_inflight=64).filter(even)
    with p.run(on_error="dead_letter") as run:
        for _ in run:
            pass

if __name__ == "__main__":
    mp.set_start_method("fork")
    chans = [shmring.Channel.create(feed, 1 << 16, "spsc"),
             shmring.Channel.create(ticks, 1 << 14, "broadcast")]
    procs = [mp.Process(target=f, args=a) for f, a in (
        (produce, (feed, 50, 0.01)), (consume, (feed, 0.0)),
        (produce, (ticks, 20, 0.01)), (consume, (ticks, 0.0)), (consume, (ticks, 0.05)),
        (pipeline, ()))]
    for p in procs:
        p.start()
    print("ready", flush=True)
    for p in procs:
        p.join()
    for ch in chans:
        ch.close()
    sys.exit(max(abs(p.exitcode or 0) for p in procs))
'''

_count = itertools.count()


@dataclass
class Scene:
    """The running scene and where it lives."""

    env: dict[str, str]
    namespace: str
    socket_dir: str
    feed: str
    ticks: str
    pipeline: str
    proc: subprocess.Popen[str]

    def top(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``shmring top ARGS`` to its end, output captured."""
        return subprocess.run([sys.executable, "-m", "shmring", "top", *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def segments(self) -> list[str]:
        """The scene's segments in /dev/shm."""
        return sorted(e for e in os.listdir("/dev/shm")
                      if e.startswith(f"shmring.{self.namespace}."))


@contextlib.contextmanager
def running_scene() -> Iterator[Scene]:
    """Start the scene; stop it at the end and check it left nothing."""
    pid = os.getpid()
    ns = f"top{pid}x{next(_count)}"
    sock_dir = tempfile.mkdtemp(prefix="shmr-")
    stop = os.path.join(sock_dir, "stop")
    env = dict(os.environ, SHMRING_NAMESPACE=ns, SHMRING_SOCKET_DIR=sock_dir,
               SHMRING_SUPERVISOR_IDLE="0.3")
    for k in ("SHMRING_SUPERVISOR", "COLUMNS", "LINES"):  # the terminal's size is tmux's
        env.pop(k, None)
    n = next(_count)
    names = (f"t-{pid}-top{n}-feed", f"t-{pid}-top{n}-ticks", f"p-{pid}-top{n}")
    proc = subprocess.Popen([sys.executable, "-c", SCENE, stop, *names], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = Scene(env, ns, sock_dir, *names, proc)
    ok = False
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        poll(lambda: len([x for x in s.segments() if f".{names[2]}." in x]) >= 5, 30,
             "the pipeline's channels")
        yield s
        with open(stop, "w"):
            pass
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        poll(lambda: not s.segments(), 10, "the scene's segments to go")
        poll(lambda: not _lock_held(os.path.join(sock_dir, f"{ns}.lock")), 10,
             "the supervisor to exit")
        ok = True
    finally:
        if not ok and proc.poll() is None:
            # A failed test: stop the scene the way it stops (its forked
            # children exit and release their segments), then kill it.
            with open(stop, "w"):
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=30)
            poll(lambda: not s.segments(), 10, "the scene's segments to go")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    """The scene the module's tests watch (none of them disturbs it)."""
    with running_scene() as s:
        yield s


def _lock_held(path: str) -> bool:
    from shmring._cli.top.supervisor import lock_holder

    return lock_holder(path) is not None


def poll(cond: Callable[[], object], timeout: float, what: str,
         show: Callable[[], str] | None = None) -> None:
    """Check ``cond`` every 20 ms until true; fail after ``timeout`` seconds
    (saying what ``show`` returns then, the screen)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}"
                        + (f"; the screen:\n{show()}" if show else ""))
        time.sleep(0.02)


# ------------------------------------------------------------------ tmux --
class Tmux:
    """A tmux server of our own (``-L``) with one 160x50 window running a command."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"shmring-top-{os.getpid()}-{next(_count)}"
        self.env = env
        self.dir = tempfile.mkdtemp(prefix="shmr-tmux-")
        self.exit_file = os.path.join(self.dir, "exit")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def start(self, *top_args: str) -> None:
        """Run ``shmring top TOP_ARGS`` in the window; its status goes to a file."""
        keep = " ".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("SHMRING_"))
        cmd = (f"env {keep} {sys.executable} -m shmring top {' '.join(top_args)}; "
               f"echo $? > {self.exit_file}; sleep 600")
        self.tmux("new-session", "-d", "-x", "160", "-y", "50", "-s", "top", cmd)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def shell_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", "top", "#{pane_pid}").strip())

    def top_pid(self) -> int:
        """The pid of ``shmring top``: the child of the window's shell."""
        pid = self.shell_pid()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        assert len(kids) == 1, kids
        return kids[0]

    def exit_status(self) -> int | None:
        try:
            with open(self.exit_file) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tmux(scene: Scene) -> Iterator[Tmux]:
    t = Tmux(scene.env)
    try:
        yield t
    finally:
        t.close()


# --------------------------------------------------------------- parsing --
def number(cell: str) -> float:
    """A count cell back to a number: ``12.3k`` -> 12300."""
    m = re.fullmatch(r"([\d.]+)([kMG]?)", cell.strip())
    assert m, f"not a count: {cell!r}"
    return float(m[1]) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m[2]]


def row(screen: str, first: str) -> list[str] | None:
    """The cells of the line whose first cell is ``first`` (columns are two
    or more spaces apart), or None."""
    for line in screen.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] == first:
            return cells
    return None


def flowing(screen: str, name: str) -> bool:
    """True if region ``name``'s row shows messages in and out per second."""
    r = row(screen, name)
    return r is not None and len(r) >= 9 and r[3] != "-" and number(r[3]) > 0 \
        and number(r[4]) > 0


def stage_items(screen: str, stage: str) -> float | None:
    r = row(screen, stage)
    return number(r[4]) if r is not None and len(r) >= 9 else None


def check_frame(screen: str, s: Scene) -> None:
    """What every frame of the scene shows."""
    assert f"namespace {s.namespace!r}" in screen
    m = re.search(r"supervisor: running, pid (\d+)", screen)
    assert m, screen
    with open(f"/proc/{m[1]}/cmdline", "rb") as f:
        assert b"supervisor" in f.read()
    feed = row(screen, s.feed)
    assert feed is not None and feed[1] == "spsc" and feed[-1] == "1p 1c", screen
    ticks = row(screen, s.ticks)
    assert ticks is not None and ticks[1] == "broadcast" and ticks[-1] == "1p 2c", screen
    assert re.search(r"\d+(\.\d+)? (B|KiB) \(\d+\)", ticks[7]), ticks  # the slowest one's lag
    assert f"pipeline {s.pipeline} (parent " in screen
    inc, even = row(screen, "0 inc"), row(screen, "1 even")
    assert inc is not None and inc[1] == "2", screen
    assert even is not None and even[1] == "1", screen
    assert number(inc[8]) == 1  # the poison item, a dead letter
    for edge, pattern, procs in (("0.inc", "mpmc", "1p 2c"), ("1.even", "mpmc", "2p 1c"),
                                 ("out", "mpsc", "1p 1c")):
        r = row(screen, edge)
        assert r is not None and r[1:2] == [pattern] and r[-1] == procs, (edge, r, screen)
    assert re.search(rf"worker {s.pipeline}/inc", screen) and "supervisor" in screen


def live_run(tmux: Tmux, s: Scene, *args: str) -> None:
    """Start top in tmux; check its frames show the scene, that it refreshes
    with traffic flowing, and that ``q`` quits it with status 0."""
    tmux.start(*args)
    poll(lambda: flowing(tmux.screen(), s.feed) and flowing(tmux.screen(), s.ticks)
         and (stage_items(tmux.screen(), "0 inc") or 0) > 0, 30,
         "a frame with rates", tmux.screen)
    first = tmux.screen()
    check_frame(first, s)
    assert "(q quits)" in first
    pid = tmux.top_pid()
    items = stage_items(first, "0 inc")
    assert items is not None
    # It refreshes: the stage's item count goes up in a later frame.
    poll(lambda: (stage_items(tmux.screen(), "0 inc") or 0) > items, 10, "a newer frame")
    later = tmux.screen()
    assert later != first
    check_frame(later, s)
    assert flowing(later, s.feed)
    tmux.keys("q")
    poll(lambda: tmux.exit_status() is not None, 10, "top to exit")
    assert tmux.exit_status() == 0
    assert not os.path.exists(f"/proc/{pid}")


# ----------------------------------------------------------------- tests --
def test_live_rich_view_in_a_terminal(scene: Scene, tmux: Tmux) -> None:
    live_run(tmux, scene)
    # The alternate screen is left: the shell's screen is back, no table on it.
    assert "REGION" not in tmux.screen()


def test_live_plain_view_in_a_terminal(scene: Scene, tmux: Tmux) -> None:
    live_run(tmux, scene, "--plain", "--interval", "0.3")


def test_top_attaches_to_nothing(scene: Scene, tmux: Tmux) -> None:
    tmux.start("-n", scene.namespace)
    poll(lambda: flowing(tmux.screen(), scene.feed), 30, "a frame with rates", tmux.screen)
    pid = tmux.top_pid()
    with open(f"/proc/{pid}/stat") as f:
        nice = int(f.read().rsplit(")", 1)[1].split()[16])
    assert nice == min(19, os.nice(0) + 10)  # the traffic goes first
    for _ns, name in list_segments(scene.namespace):
        snap = inventory.snapshot(scene.namespace, name)
        assert pid not in {v.pid for v in snap.slots}, name
    status = json.loads(scene.top("--json", "-i", "0.1").stdout)["supervisor"]
    assert pid not in {c["pid"] for c in status["clients"]}
    tmux.keys("C-c")  # Ctrl-C ends it as it ends every shmring command
    poll(lambda: tmux.exit_status() is not None, 10, "top to exit")
    assert tmux.exit_status() == 130
    assert not os.path.exists(f"/proc/{pid}")


def test_sigterm_quits_cleanly(scene: Scene, tmux: Tmux) -> None:
    tmux.start("--plain")
    poll(lambda: flowing(tmux.screen(), scene.feed), 30, "a frame with rates", tmux.screen)
    pid = tmux.top_pid()
    os.kill(pid, signal.SIGTERM)
    poll(lambda: tmux.exit_status() is not None, 10, "top to exit")
    assert tmux.exit_status() == 0


@pytest.mark.parametrize("view", ["--plain", "rich"])
def test_once_prints_one_frame(scene: Scene, view: str) -> None:
    t0 = time.monotonic()
    r = scene.top("--once", *([view] if view != "rich" else []))
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 20
    check_frame(r.stdout, scene)
    assert flowing(r.stdout, scene.feed) and flowing(r.stdout, scene.ticks)
    assert r.stdout.count("shmring top  namespace") == 1
    assert "(q quits)" not in r.stdout and "\x1b" not in r.stdout


def test_json_frame(scene: Scene) -> None:
    r = scene.top("--json", "--interval", "0.4")
    assert r.returncode == 0, r.stderr
    f: dict[str, Any] = json.loads(r.stdout)
    assert f["namespace"] == scene.namespace and 0.35 < f["window"] < 5
    regions = {x["name"]: x for x in f["regions"]}
    feed, ticks = regions[scene.feed], regions[scene.ticks]
    for x in (feed, ticks):
        assert x["in_per_s"] > 0 and x["out_per_s"] > 0
        # 40-byte messages (the two counters are read one after the other)
        assert x["bytes_in_per_s"] >= 0.9 * 40 * x["in_per_s"]
        assert x["run"] is None
    assert feed["pattern"] == "spsc" and feed["lag"] is None
    assert ticks["pattern"] == "broadcast" and ticks["lag"] is not None
    assert ticks["out_per_s"] > ticks["in_per_s"]  # two consumers see each message
    slow = ticks["lag_pid"]
    assert slow in {a["pid"] for a in ticks["attached"] if a["role"] == "consumer"}
    assert 0 <= ticks["lag"] <= ticks["capacity"]
    (run,) = f["pipelines"]
    assert run["pipeline"] == scene.pipeline and run["parent_alive"]
    assert run["base"] == f"{scene.pipeline}.{run['pid']}.{run['run']}"
    inc, even = run["stages"]
    assert (inc["name"], inc["workers"], even["name"], even["workers"]) == ("inc", 2, "even", 1)
    assert inc["items_per_s"] > 0 and inc["items"] > 0 and 0 <= inc["busy"] <= 2
    assert even["out"] <= even["items"]
    assert (inc["redelivered"], inc["dead_letters"]) == (0, 1)
    mine = [x for x in f["regions"] if x["run"] == run["base"]]
    assert {x["name"][len(run["base"]) + 1:] for x in mine} == {
        "0.inc", "1.even", "out", "ctl", "board"}
    sup = f["supervisor"]
    assert sup["running"] and sup["answered"] and sup["pid"] > 0
    assert sup["regions"] == len(f["regions"])
    procs = {p["pid"]: p for p in f["processes"]}
    assert procs[sup["pid"]]["what"] == "supervisor"
    assert procs[run["pid"]]["what"] == f"pipeline {scene.pipeline}"
    workers = [p for p in procs.values() if p["what"] == f"worker {scene.pipeline}/inc"]
    assert len(workers) == 2 and all(p["command"] == "python" or p["command"] for p in workers)
    assert all(p["supervisor"] == "connected" for p in workers)
    producer = next(p for p in procs.values() if scene.feed in p["regions"] and p["producer"])
    with open(f"/proc/{producer['pid']}/comm") as fc:
        assert producer["command"] == fc.read().strip()


def test_a_killed_worker_shows_as_a_redelivery() -> None:
    with running_scene() as scene:
        tmux = Tmux(scene.env)
        try:
            _kill_a_worker(scene, tmux)
        finally:
            tmux.close()


def _kill_a_worker(scene: Scene, tmux: Tmux) -> None:
    tmux.start("--plain", "--interval", "0.2")
    poll(lambda: (stage_items(tmux.screen(), "0 inc") or 0) > 0, 30, "a frame")
    before = row(tmux.screen(), "0 inc")
    assert before is not None

    def redelivered() -> bool:
        r = row(tmux.screen(), "0 inc")
        return r is not None and number(r[7]) >= 1 and number(r[4]) > number(before[4])

    # The replacement takes the dead worker's item again: one redelivery,
    # and the stage's count of items keeps growing (the dead worker's
    # items are folded in, not lost, when its board entry is reused). A
    # worker killed between two items held none: then kill another.
    for _attempt in range(4):
        f = json.loads(scene.top("--json", "-i", "0.1").stdout)
        workers = [p["pid"] for p in f["processes"]
                   if p["what"] == f"worker {scene.pipeline}/inc"]
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 8
        while not redelivered() and time.monotonic() < deadline:
            time.sleep(0.02)
        if redelivered():
            break
    poll(redelivered, 1, "the redelivery", tmux.screen)
    tmux.keys("q")
    poll(lambda: tmux.exit_status() is not None, 10, "top to exit")
    assert tmux.exit_status() == 0
