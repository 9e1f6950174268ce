"""shmring.logging end to end, with real processes: the sink daemon
(examples/logsink/logsinkd.py) and scripted apps (tests/logsink_util.py run
as programs) in a namespace of their own, real SIGKILLs and SIGSTOPs.

Every check is exact: an app says which of its records ``emit`` dropped, and
the sink's file must hold every other record, none of the dropped ones, and
a drop report whose counts add up to the app's ``handler.dropped``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from logsink_util import (
    App,
    drops_reported,
    lines,
    quick_status,
    records,
    start_sink,
    status,
    stop,
    wait_for,
)


def expected(app: App, answers: list[dict[str, Any]], n: int) -> set[tuple[int, int]]:
    """The (pid, i) of ``app``'s ``n`` records that its emits did not drop."""
    dropped: set[int] = set()
    for a in answers:
        dropped.update(a["dropped"])
    return {(app.pid, i) for i in range(n) if i not in dropped}


def test_many_apps_one_sink_exact(ns: str, tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    sink = start_sink(ns, log)
    apps = [App(ns) for _ in range(4)]
    try:
        for a in apps:
            a.send("log 1000 many")
        answers = [a.answer() for a in apps]
        assert all(ans["dropped"] == [] for ans in answers), answers  # 400 kB into 4 MiB
        wait_for(lambda: quick_status(ns)["written"] == 4000, what="4000 records written")
        got = records(log, "many")
        assert set(got) == {(a.pid, i) for a in apps for i in range(1000)}
        assert set(got.values()) == {1}
        st = status(ns)
        assert st["running"] and st["pid"] == sink.pid and st["drops_reported"] == 0
        assert st["pending"] == 0 and st["handlers"] == 4
        for a in apps:
            assert a.close()["total_dropped"] == 0
    finally:
        for a in apps:
            a.reap()
        stop(sink)
    assert not status(ns)["running"]


def test_sink_absent_drops_counted_and_reported(ns: str, tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    app = App(ns)
    sink = None
    try:
        early = app.log(300, "early")
        assert early["dropped"] == list(range(300)) and early["total_dropped"] == 300
        assert early["sent"] == 0
        assert early["max_emit"] < 0.5, early["max_emit"]   # the bound (0.05 s) and slack
        sink = start_sink(ns, log)
        # The handler looks for the channel again at most every 0.5 s.
        late: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not late or late[-1]["sent"] == 0:
            assert time.monotonic() < deadline, "the handler never found the sink"
            if late:
                time.sleep(0.02)
            late.append(app.log(1, "late"))
        total = late[-1]["total_dropped"]
        assert total == 300 + len(late) - 1
        wait_for(lambda: drops_reported(log).get(app.pid) == total, what="the drop report")
        # The report is written just before the record that carried it.
        wait_for(lambda: records(log, "late"), what="the record that carried the report")
        assert records(log, "late") == {(app.pid, 0): 1}
        assert records(log, "early") == {}
        st = status(ns)
        assert st["drops_reported"] == total and st["written"] == 1
    finally:
        app.reap()
        if sink is not None:
            stop(sink)


def test_app_killed_right_after_emit_loses_nothing(ns: str, tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    sink = start_sink(ns, log)
    app = App(ns)
    try:
        # The sink is alive but not reading: the records wait in the ring.
        os.kill(sink.pid, signal.SIGSTOP)
        ans = app.log(500, "kill")
        os.kill(app.pid, signal.SIGKILL)   # right after its last emit returned
        app.reap()
        assert ans["dropped"] == [] and ans["sent"] == 500
        os.kill(sink.pid, signal.SIGCONT)
        wait_for(lambda: quick_status(ns)["written"] == 500, what="500 records written")
        assert records(log, "kill") == {(app.pid, i): 1 for i in range(500)}
    finally:
        os.kill(sink.pid, signal.SIGCONT)
        app.reap()
        stop(sink)


def test_sink_killed_and_restarted_loses_nothing_and_rotates(ns: str, tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    args = ("--max-bytes", "20000", "--backups", "200")
    sink = start_sink(ns, log, *args)
    apps = [App(ns) for _ in range(3)]
    n = 2000
    try:
        for a in apps:
            a.send(f"log {n} restart 0.0003")
        wait_for(lambda: (quick_status(ns)["written"] or 0) > 1000, what="a stream to kill")
        os.kill(sink.pid, signal.SIGKILL)
        sink.wait()
        stop(sink)
        sink = start_sink(ns, log, *args)   # the same channel, re-opened
        answers = [a.answer() for a in apps]
        for a in apps:
            a.send("log 10 tail")           # carries drops made while it was down
        tails = [a.answer() for a in apps]
        want = set().union(*(expected(a, [ans], n) for a, ans in zip(apps, answers, strict=True)))
        wait_for(lambda: set(records(log, "restart")) >= want, what="every record sent")
        for a in apps:
            a.close()
        got = records(log, "restart")
        assert set(got) == want                      # nothing dropped was written
        # At least once: only the record being written at the kill may appear twice.
        assert sum(got.values()) - len(got) <= 1, [k for k, v in got.items() if v > 1]
        total = {a.pid: t["total_dropped"] for a, t in zip(apps, tails, strict=True)}
        wait_for(lambda: all(drops_reported(log).get(p, 0) == d for p, d in total.items()),
                 what="the drop reports")
        assert len(want) + sum(total.values()) == 3 * n + sum(
            len(t["dropped"]) for t in tails)
        assert (tmp_path / "sink.log.1").exists()  # rotated
        # By size: no file grew past --max-bytes (how many there are
        # depends on how much was dropped while the sink was down).
        files = [log, *tmp_path.glob("sink.log.*")]
        assert len(files) > 2 and all(f.stat().st_size <= 20000 for f in files)
    finally:
        for a in apps:
            a.reap()
        stop(sink)


class _Boom:
    """Unpickling this would create a file: the sink must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_sink_never_unpickles_and_skips_what_is_not_a_record(ns: str, tmp_path: Path) -> None:
    import pickle

    import shmring
    import shmring.logging as shlog

    log = tmp_path / "sink.log"
    trap = tmp_path / "unpickled"
    sink = start_sink(ns, log)
    ch = shmring.Channel.open("logsink", namespace=ns)
    try:
        tx = ch.producer()
        tx.send(pickle.dumps(_Boom(str(trap))))
        tx.send_obj(("not", "a", "log record"))
        tx.send(b"")
        # A record whose args cannot be pickled is sent as its formatted message.
        handler = shlog.Handler("logsink", namespace=ns)
        logger = logging.getLogger("unpicklable")
        logger.addHandler(handler)
        logger.propagate = False
        logger.error("args %s", lambda: None)
        assert handler.sent == 1 and handler.dropped == 0
        wait_for(lambda: quick_status(ns)["written"] == 1, what="the record")
        st = quick_status(ns)
        assert st["undecodable"] == 3 and st["pending"] == 0
        handler.close()
    finally:
        ch.close()
        stop(sink)
    assert not trap.exists()
    got = lines(log)
    assert [(n, lv) for _p, n, lv, _m in got] == [("shmring.logsink", "ERROR")] * 3 + [
        ("unpicklable", "ERROR")]
    assert got[-1][3].startswith("args <function ")


def test_slow_sink_bounds_emit_and_counts_drops(ns: str, tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    sink = start_sink(ns, log, "--capacity", "65536")   # a few hundred records
    app = App(ns)
    try:
        os.kill(sink.pid, signal.SIGSTOP)                 # alive, not reading: the ring fills
        full = app.cmd("log 3000 full 0.0005")           # 1.5 s or more
        assert full["dropped"], "the ring never filled"
        assert full["max_emit"] < 0.5, full["max_emit"]   # the bound (0.05 s) and slack
        # One emit waits the full timeout, then none for 0.5 s, and so on.
        assert full["slow"] <= 20, full["slow"]
        assert full["sent"] + full["total_dropped"] == 3000
        os.kill(sink.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        late: list[dict[str, Any]] = []
        while not late or late[-1]["sent"] == full["sent"]:
            assert time.monotonic() < deadline, "no record got through after SIGCONT"
            if late:
                time.sleep(0.02)
            late.append(app.log(1, "after"))
        total = late[-1]["total_dropped"]
        wait_for(lambda: drops_reported(log).get(app.pid) == total, what="the drop report")
        assert set(records(log, "full")) == expected(app, [full], 3000)
        assert set(records(log, "full").values()) == {1}
        assert records(log, "after") == {(app.pid, 0): 1}
    finally:
        os.kill(sink.pid, signal.SIGCONT)
        app.reap()
        stop(sink)


def test_forked_child_sends_through_endpoints_of_its_own(ns: str, tmp_path: Path) -> None:
    import shmring.logging as shlog

    log = tmp_path / "sink.log"
    sink = start_sink(ns, log)
    handler = shlog.Handler("logsink", namespace=ns)
    logger = logging.getLogger("forked")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("fork 0")
        pid = os.fork()
        if pid == 0:  # the child: counts of its own, then exit without cleanup
            code = 1
            try:
                code = 0 if handler.sent == 0 and handler.dropped == 0 else 2
                for i in range(1, 11):
                    logger.error("fork %d", i)
                if handler.sent != 10:
                    code = 3
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0
        logger.error("fork 11")
        wait_for(lambda: quick_status(ns)["written"] == 12, what="12 records")
        assert records(log, "fork") == {
            **{(os.getpid(), i): 1 for i in (0, 11)}, **{(pid, i): 1 for i in range(1, 11)}}
        assert handler.sent == 2
    finally:
        handler.close()
        logger.removeHandler(handler)
        stop(sink)
