"""The supervisor connection's background thread (``shmring-watch-<ns>``):
named, a daemon, running only while the process holds regions, and stopped
and joined when the last one closes, when the connection closes, and at
interpreter exit, so test suites that check for dangling threads find none.

Real supervisors (auto-started, or in-process) and real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

from supervisor_util import Env

import shmring
from shmring._supervisor.server import Supervisor


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shmring-watch")]


def test_watch_thread_is_a_named_daemon_and_goes_with_the_last_close(
        env: Env, sup: Supervisor) -> None:
    ch = shmring.Channel.create("w", capacity=4096)
    try:
        running = _watchers()
        assert [t.name for t in running] == [f"shmring-watch-{env.namespace}"]
        assert running[0].daemon
    finally:
        ch.close()
    assert _watchers() == []
    assert not running[0].is_alive()


def test_watch_thread_stops_when_the_connection_closes(env: Env, sup: Supervisor) -> None:
    ch = shmring.Channel.create("w", capacity=4096)
    try:
        t = _watchers()[0]
        env.connection().disconnect()
        assert not t.is_alive()
        assert _watchers() == []
    finally:
        ch.close()
    assert _watchers() == []


_CHILD = textwrap.dedent("""
    import atexit, sys, threading
    import shmring
    ch = shmring.Channel.create(sys.argv[1], capacity=4096)
    tx, rx = ch.producer(), ch.consumer()
    tx.send(b"x")
    assert rx.recv() == b"x"
    assert any(t.name.startswith("shmring-watch") for t in threading.enumerate())
    if sys.argv[2] == "atexit":
        # What the interpreter does at exit, run now so we can look after it.
        atexit._run_exitfuncs()
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("left:", left)
    else:
        ch.close()
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("left:", left)
""")


def _run_child(env: Env, how: str) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD, "w" + how, how],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), elapsed


def test_a_process_that_closes_leaves_no_thread_and_exits_promptly(env: Env) -> None:
    out, elapsed = _run_child(env, "close")  # auto-starts a supervisor
    assert out == "left: []"
    assert elapsed < 10.0


def test_interpreter_exit_stops_the_watch_thread(env: Env, sup: Supervisor) -> None:
    out, elapsed = _run_child(env, "atexit")
    assert out == "left: []"
    assert elapsed < 10.0
