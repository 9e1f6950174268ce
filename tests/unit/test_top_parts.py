"""The pieces of ``shmring top`` one at a time: rates from real ring
counters, a pipeline's stage counts across board entries that change hands,
the supervisor seen from outside (running, not running, a lock holder),
keys from a real pseudo-terminal, the cells' words, the arguments, and the
plain fallback without rich."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator

import pytest
from supervisor_util import Env, supervisor_env

import shmring
from shmring import _layout as L
from shmring._cli.main import main
from shmring._cli.readable import size
from shmring._cli.top import cells as C
from shmring._cli.top.keys import Keys
from shmring._cli.top.plain_view import render
from shmring._cli.top.rates import Tracker
from shmring._cli.top.sample import RUN_RE, Sample, WorkerWords, take
from shmring._cli.top.supervisor import SupervisorState, lock_holder, observe
from shmring._region.inventory import SlotView, Snapshot
from shmring._supervisor.server import Supervisor


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with supervisor_env(monkeypatch) as e:
        yield e


# ------------------------------------------------------------------ rates --
def test_rates_are_counter_differences_over_the_sampling_window(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1 << 16, pattern="spsc", supervised=False)
    try:
        tx, rx = ch.producer(), ch.consumer()
        tracker = Tracker()
        first = tracker.frame(take(env.namespace, supervisor=False))
        (row,) = first.regions
        assert first.window is None and row.in_per_s is None and row.out_per_s is None
        for _ in range(100):
            tx.send(b"0123456789")
        for _ in range(60):
            rx.recv(timeout=1)
        f = tracker.frame(take(env.namespace, supervisor=False))
        (row,) = f.regions
        assert f.window is not None and f.window > 0
        assert row.in_per_s is not None and row.out_per_s is not None
        assert row.bytes_in_per_s is not None and row.bytes_out_per_s is not None
        assert round(row.in_per_s * f.window) == 100
        assert round(row.out_per_s * f.window) == 60
        assert round(row.bytes_in_per_s * f.window) == 1000
        assert round(row.bytes_out_per_s * f.window) == 600
        assert (row.messages_in, row.messages_out) == (100, 60)
        assert row.fill > 0 and row.fill_pct is not None and 0 < row.fill_pct < 100
        assert [(a.pid, a.role, a.alive) for a in row.attached] == [
            (os.getpid(), role, True) for role in ("producer", "consumer")]  # channel's lent
        assert C.attached(row) == "1p 1c"
        assert row.lag is None and row.run is None
        # Nothing sent since: the rates fall to zero.
        f = tracker.frame(take(env.namespace, supervisor=False))
        assert (f.regions[0].in_per_s, f.regions[0].out_per_s) == (0, 0)
    finally:
        ch.close()
        ch.unlink()


def test_a_region_made_again_under_its_name_has_no_rate_yet(env: Env, uname: str) -> None:
    tracker = Tracker()
    ch = shmring.Channel.create(uname, capacity=4096, supervised=False)
    ch.producer().send(b"x")
    tracker.frame(take(env.namespace, supervisor=False))
    ch.close()
    ch.unlink()
    time.sleep(0.001)  # another creation time stamp
    ch = shmring.Channel.create(uname, capacity=4096, supervised=False)
    try:
        (row,) = tracker.frame(take(env.namespace, supervisor=False)).regions
        assert row.in_per_s is None and row.messages_in == 0
    finally:
        ch.close()
        ch.unlink()


def test_broadcast_lag_is_the_slowest_consumer(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=1 << 14, pattern="broadcast", supervised=False)
    try:
        fast, slow = ch.consumer(), ch.consumer()
        tx = ch.producer()
        for _ in range(10):
            tx.send(b"y" * 100)
        for _ in range(10):
            fast.recv(timeout=1)
        slow.recv(timeout=1)
        (row,) = Tracker().frame(take(env.namespace, supervisor=False)).regions
        assert row.pattern == "broadcast" and row.lag_pid == os.getpid()
        assert row.lag == row.fill and row.lag is not None
        record = row.lag // 9  # nine records behind, all of one size
        assert row.lag == 9 * record and record >= 100
        cells = C.region_cells(row)
        assert cells[7].startswith(size(row.lag)) and f"({os.getpid()})" in cells[7]
    finally:
        ch.close()
        ch.unlink()


# -------------------------------------------------------------- pipelines --
def _edge(name: str, slots: list[tuple[int, str]], msgs: int = 0) -> Snapshot:
    return Snapshot("ns", name, f"/shmring.ns.{name}", 8192, 1.0, "ok", pattern="mpmc",
                    capacity=4096, created_ns=1, messages_in=msgs, messages_out=msgs,
                    slots=[SlotView(i, pid, 1, role, L.SLOT_ACTIVE, True, None, 0, 0, 0, 0)
                           for i, (pid, role) in enumerate(slots)])


def _words(entry: int, pid: int, first: int, *, again: int = 0, dead: int = 0,
           item: int = 0) -> WorkerWords:
    return WorkerWords(entry, pid, item, first, again, first, dead, 0, 0, 0)


def _sample(t: float, edges: list[Snapshot], board: list[WorkerWords]) -> Sample:
    return Sample("ns", t, 1e9 + t, edges, {"sq.7.1": board}, SupervisorState("ns"))


def test_stage_counts_survive_a_board_entry_changing_hands() -> None:
    """Worker 100 did 10 items and died; the parent gave its entry to worker
    101 (cleared): the stage's total keeps the 10, the rate counts only
    what happened between the frames."""
    tracker = Tracker()
    edges = [_edge("sq.7.1.0.square", [(7, "producer"), (100, "consumer"), (200, "consumer")]),
             _edge("sq.7.1.1.add", [(100, "producer"), (200, "producer"), (300, "consumer")]),
             _edge("sq.7.1.board", [])]
    f = tracker.frame(_sample(0.0, edges, [_words(0, 100, 10), _words(1, 200, 5, item=3),
                                           _words(2, 300, 15)]))
    (run,) = f.runs
    assert (run.pipeline, run.pid, run.run) == ("sq", 7, 1)
    square, add = run.stages
    assert (square.name, square.items, square.workers, square.busy) == ("square", 15, 2, 1)
    assert square.items_per_s is None and (add.name, add.items) == ("add", 15)
    edges[0] = _edge("sq.7.1.0.square", [(7, "producer"), (101, "consumer"), (200, "consumer")])
    f = tracker.frame(_sample(0.5, edges, [_words(0, 101, 2, again=1), _words(1, 200, 8),
                                           _words(2, 300, 25, dead=1)]))
    square, add = f.runs[0].stages
    assert square.items == 10 + 2 + 8 and square.redelivered == 1
    assert square.items_per_s == (20 - 15) / 0.5 and square.busy == 0
    assert add.items == 25 and add.items_per_s == 20 and add.dead_letters == 1
    workers = {p.pid: p.what for p in f.processes}
    assert workers[7] == "pipeline sq" and workers[101] == "worker sq/square"
    assert workers[300] == "worker sq/add"
    # Regions of the run come after the others, edges in stage order.
    assert [r.name for r in f.regions] == ["sq.7.1.0.square", "sq.7.1.1.add", "sq.7.1.board"]


def test_run_names_parse() -> None:
    m = RUN_RE.match("wordfreq.1234.2.3.split-2")
    assert m and (m["base"], m["pipeline"], m["pid"], m["run"], m["index"], m["stage"]) == (
        "wordfreq.1234.2", "wordfreq", "1234", "2", "3", "split-2")
    for rest in ("out", "ctl", "board"):
        m = RUN_RE.match(f"p.1.1.{rest}")
        assert m and m["rest"] == rest and m["index"] is None
    for name in ("jobs", "a.b.c", "p.x.1.board", "p.1.1.0", "p.1.1.board.x"):
        assert RUN_RE.match(name) is None, name


# ------------------------------------------------------------- supervisor --
def test_no_supervisor_is_said_and_none_is_started(env: Env) -> None:
    s = observe(env.namespace)
    assert not s.running and s.pid is None and "not running" in s.note
    assert not os.path.exists(env.sock)
    assert lock_holder(env.lock) is None


def test_a_running_supervisor_answers_status(env: Env, uname: str) -> None:
    with Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0):
        ch = shmring.Channel.create(uname, capacity=4096)
        try:
            s = observe(env.namespace)
            assert s.running and s.answered and s.pid == os.getpid()
            assert s.regions == 1 and s.processes == 1
            assert [c.pid for c in s.clients] == [os.getpid()]
            assert s.clients[0].holds == 1 and s.clients[0].connected
            assert lock_holder(env.lock) == os.getpid()
            line = C.supervisor_line(Tracker().frame(take(env.namespace)))
            assert line.startswith(f"supervisor: running, pid {os.getpid()}, 1 regions tracked")
        finally:
            ch.close()
            ch.unlink()
            shmring._supervisor.client.disconnect_all()


def test_a_supervisor_with_another_socket_directory_is_found(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    with Supervisor(env.namespace, socket_dir=env.socket_dir, startup_grace=0.0), \
            tempfile.TemporaryDirectory(prefix="shmr-") as elsewhere:
        monkeypatch.setenv("SHMRING_SOCKET_DIR", elsewhere)  # as another environment has it
        s = observe(env.namespace)
        assert s.answered and s.pid == os.getpid() and s.socket == env.sock


def test_lock_holder_reads_proc_locks() -> None:
    with tempfile.NamedTemporaryFile() as f:
        assert lock_holder(f.name) is None
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert lock_holder(f.name) == os.getpid()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        assert lock_holder(f.name) is None


# ------------------------------------------------------------------- keys --
def test_keys_from_a_terminal_in_cbreak_mode() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "r", closefd=False) as stream:
            before = termios.tcgetattr(slave)
            with Keys(stream) as keys:
                assert keys.active
                mode = termios.tcgetattr(slave)
                assert not mode[3] & (termios.ICANON | termios.ECHO)
                assert mode[3] & termios.ISIG  # Ctrl-C still interrupts
                t0 = time.monotonic()
                assert keys.wait(0.05) == ""
                assert time.monotonic() - t0 >= 0.04
                os.write(master, b"q")
                t0 = time.monotonic()
                assert keys.wait(5) == "q"
                assert time.monotonic() - t0 < 2  # at once, not at the end of the wait
            assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_no_keys_without_a_terminal() -> None:
    r, w = os.pipe()
    try:
        with os.fdopen(r, "r", closefd=False) as stream, Keys(stream) as keys:
            os.write(w, b"q")
            assert not keys.active
            t0 = time.monotonic()
            assert keys.wait(0.05) == ""
            assert time.monotonic() - t0 >= 0.04
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------------ cells --
def test_cells() -> None:
    assert [C.count(x) for x in (None, 0, 4.5, 950, 12_345, 4_560_000, 2.5e9)] == [
        "-", "0", "4.5", "950", "12.3k", "4.56M", "2.5G"]
    assert [C.percent(x) for x in (None, 0, 0.4, 37.2, 100)] == ["-", "0%", "<1%", "37%", "100%"]
    assert C.per_second(None) == "-" and C.per_second(2048) == "2 KiB/s"
    assert C.per_second(1536.4) == "1.5 KiB/s"


# -------------------------------------------------------------- the command --
def test_json_and_once_of_an_empty_namespace(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--json", "-n", env.namespace, "--interval", "0.05"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert (f["namespace"], f["regions"], f["pipelines"], f["processes"]) == (
        env.namespace, [], [], [])
    assert f["supervisor"]["running"] is False and 0.04 < f["window"] < 5
    assert main(["top", "--once", "--plain", "-n", env.namespace, "-i", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"shmring top  namespace {env.namespace!r}")
    assert f"no regions in namespace {env.namespace!r}" in out
    assert not os.path.exists(env.sock)  # looking started no supervisor


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--interval", "x"],
                                  ["--interval", "4000"], ["-n", "bad ns"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["top", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("shmring: error: argument") and err.count("\n") == 1


def test_plain_fallback_without_rich(env: Env, uname: str) -> None:
    ch = shmring.Channel.create(uname, capacity=4096, pattern="mpsc", supervised=False)
    try:
        ch.producer().send(b"hello")
        code = ("import sys; sys.modules['rich'] = None\n"  # as if the extra were not installed
                "from shmring._cli.main import main\n"
                "from shmring._cli.top.command import have_rich\n"
                "assert not have_rich()\n"
                "sys.exit(main(['top', '--once', '-i', '0.05']))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, SHMRING_SUPERVISOR="0"))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith(f"shmring top  namespace {env.namespace!r}")
        header = next(i for i, line in enumerate(lines) if line.startswith("REGION"))
        assert lines[header + 1].split()[:3] == [uname, "mpsc", "<1%"]
        assert lines[header + 1].split()[-1] == "1p"
    finally:
        ch.close()
        ch.unlink()


def test_plain_render_of_a_frame_with_nothing() -> None:
    f = Tracker().frame(Sample("quiet", 0.0, 0.0, [], {}, SupervisorState("quiet")))
    text = render(f, 0.5, keys=True)
    assert text.splitlines()[0].endswith("every 0.5 s  (q quits)")
    assert "supervisor: not running" in text and "no regions in namespace 'quiet'" in text
